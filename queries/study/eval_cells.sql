-- per evaluation, grid size, level and metric (the focal agents): seeds, mean, sd and 95% CI over seeds
-- From study_eval_values (queries/study/_eval_values.sql), as cells.sql does for the training
-- cells: CI = mean +- t(0.975, n - 1) sd / sqrt(n) (view t975); n < 2: sd and CI are null.
with
stats as (
    select
        evaluation, grid_size, level, metric,
        count(value) as n_seeds,
        avg(value) as mean,
        stddev_samp(value) as sd
    from study_eval_values
    group by all
)
select
    s.evaluation, s.grid_size, s.level, s.metric, s.n_seeds, s.mean, s.sd,
    s.mean - t.t * s.sd / sqrt(s.n_seeds) as ci_low,
    s.mean + t.t * s.sd / sqrt(s.n_seeds) as ci_high
from stats as s
left join t975 as t on s.n_seeds - 1 >= t.lo and s.n_seeds - 1 < t.hi
order by s.grid_size, s.metric, s.level, s.evaluation
