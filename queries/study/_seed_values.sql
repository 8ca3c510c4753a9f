-- (view) study_seed_values: a metric's value per cell, window and seed
-- The episodes of a run in a window [lo, hi] of study_windows: lo <= frac < hi (frac <= 1 when
-- hi = 1); a run's value is sum(num) / sum(den) over them (null when den is 0: a ratio with no
-- hits); runs repeating a (cell, seed) are averaged, so a rerun is not new evidence.
create or replace view study_seed_values as
with
in_window as (
    select v.*, w.name as win
    from study_metric_values as v
    join study_windows as w
        on v.scripted or (v.frac >= w.lo and (v.frac < w.hi or w.hi >= 1))
),
per_run as (
    select
        grid_size, level, condition, win, metric, seed, run_id,
        sum(num) / nullif(sum(den), 0) as value,
        count(*) as episodes
    from in_window
    group by all
)
select grid_size, level, condition, win, metric, seed, avg(value) as value, sum(episodes) as episodes
from per_run
group by all
