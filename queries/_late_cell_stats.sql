-- (view) late_cell_stats: per learner x condition x grid size x metric, the late mean over seeds, its sd and 95% CI
-- From late_seed_metrics (queries/_late_seed_metrics.sql), one row per metric; CI = mean +-
-- t(0.975, n - 1) * sd / sqrt(n) with t from the view t975 (queries/_t975.sql); n = 1: sd and CI
-- are null. Means and sds are taken in seed order: a float sum depends on the order rows arrive in.
create or replace view late_cell_stats as
with
long as (
    unpivot late_seed_metrics
    on predatory_zaps, predatory_rate, retribution_ratio, late_hits, efficiency, equality,
        sustainability, sustainability_share, peace
    into name metric value value
),
stats as (
    select
        algo,
        condition,
        grid_size,
        metric,
        count(value) as n_seeds,
        avg(value order by seed) as mean,
        stddev_samp(value order by seed) as sd
    from long
    group by algo, condition, grid_size, metric
)
select s.*, s.mean - t.t * s.sd / sqrt(s.n_seeds) as ci_low, s.mean + t.t * s.sd / sqrt(s.n_seeds) as ci_high
from stats as s
left join t975 as t on s.n_seeds - 1 >= t.lo and s.n_seeds - 1 < t.hi
