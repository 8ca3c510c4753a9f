-- per cell (grid size, level, condition), window and metric: seeds, mean, sd and 95% CI over seeds
-- From study_seed_values (queries/study/_seed_values.sql); CI = mean +- t(0.975, n - 1) sd / sqrt(n)
-- with t from the view t975; n < 2: sd and CI are null.
with
stats as (
    select
        grid_size, level, condition, win, metric,
        count(value) as n_seeds,
        sum(episodes) as episodes,
        avg(value) as mean,
        stddev_samp(value) as sd
    from study_seed_values
    group by all
)
select
    s.grid_size, s.level, s.condition, s.win, s.metric, s.n_seeds, s.episodes, s.mean, s.sd,
    s.mean - t.t * s.sd / sqrt(s.n_seeds) as ci_low,
    s.mean + t.t * s.sd / sqrt(s.n_seeds) as ci_high
from stats as s
left join t975 as t on s.n_seeds - 1 >= t.lo and s.n_seeds - 1 < t.hi
order by s.grid_size, s.metric, s.win, s.level, s.condition
