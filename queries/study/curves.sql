-- learning curves: each metric per cell over training, in bins of the run's steps, mean over seeds with 95% CI
-- Bins: n_bins (`set variable n_bins`, default 20) equal slices of frac (global_step / the run's
-- last global_step); step = the bin's midpoint in env steps of the cell's budget (mean of the
-- seeds' last global_step). A seed's value in a bin is sum(num) / sum(den) over its episodes
-- there (rates per agent-step); scripted policies appear as one flat value (all their episodes).
-- den_total: the bin's denominator over all seeds (agent-steps; hits for retribution_ratio, so a
-- figure can leave out ratios resting on a handful of hits).
with
params as (
    select coalesce(try_cast(getvariable('n_bins') as integer), 20) as n_bins
),
binned as (
    select
        v.grid_size, v.level, v.condition, v.metric, v.seed, v.run_id, v.scripted,
        case when v.scripted then 0 else least(floor(v.frac * params.n_bins), params.n_bins - 1)::int end as bin,
        v.num, v.den, v.global_step
    from study_metric_values as v, params
),
last_step as (
    select grid_size, level, condition, avg(m) as budget
    from (select grid_size, level, condition, run_id, max(global_step) as m from study_metric_values group by all)
    group by all
),
per_seed as (
    select grid_size, level, condition, metric, seed, bin, any_value(scripted) as scripted,
        sum(num) / nullif(sum(den), 0) as value,
        sum(den) as den
    from binned
    group by all
),
stats as (
    select grid_size, level, condition, metric, bin, any_value(scripted) as scripted,
        count(value) as n_seeds, avg(value) as mean, stddev_samp(value) as sd, sum(den) as den_total
    from per_seed
    group by all
)
select
    s.grid_size, s.level, s.condition, s.metric, s.bin, s.scripted,
    (s.bin + 0.5) / p.n_bins * l.budget as step,
    s.n_seeds, s.den_total, s.mean, s.sd,
    s.mean - t.t * s.sd / sqrt(s.n_seeds) as ci_low,
    s.mean + t.t * s.sd / sqrt(s.n_seeds) as ci_high
from stats as s
cross join params as p
join last_step as l using (grid_size, level, condition)
left join t975 as t on s.n_seeds - 1 >= t.lo and s.n_seeds - 1 < t.hi
order by s.grid_size, s.metric, s.level, s.condition, s.bin
