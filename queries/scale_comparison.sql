-- late-training value of each metric per condition at 10x10 against 30x30, with 95% CIs and the 30x30 - 10x10 difference
-- The late window, per-seed values and CIs are the shared views late_seed_metrics and late_cell_stats
-- (queries/_late_seed_metrics.sql, _late_cell_stats.sql), the Welch rule as in ablation.sql; like it
-- one row per learner (algo); the two grid sizes are compared within a learner;
-- `set variable small_grid = 10` / `big_grid = 30` pick the two grid sizes compared.
-- diff = big mean - small mean; its CI uses Welch's standard error and df, null when a side has n < 2.
-- Episodes are 500 steps at 10x10 and 1000 at 30x30, so the metrics to compare across sizes are
-- rates: predatory_rate (predatory zaps per 1,000 agent-steps) and sustainability_share (mean step
-- of eating / episode length); predatory_zaps and sustainability stay per episode and in steps.
-- late_hits: the hits behind retribution_ratio (all hits in a run's late window, mean over seeds).
with
params as (
    select
        coalesce(try_cast(getvariable('small_grid') as bigint), 10) as small_grid,
        coalesce(try_cast(getvariable('big_grid') as bigint), 30) as big_grid
),
cells as (
    select * from late_cell_stats
    where metric in ('predatory_zaps', 'predatory_rate', 'retribution_ratio', 'late_hits', 'efficiency',
                     'equality', 'sustainability', 'sustainability_share', 'peace')
),
small as (
    select cells.* from cells, params where cells.grid_size = params.small_grid
),
big as (
    select cells.* from cells, params where cells.grid_size = params.big_grid
),
pairs as (
    select
        coalesce(s.algo, b.algo) as algo,
        coalesce(s.condition, b.condition) as condition,
        coalesce(s.metric, b.metric) as metric,
        s.n_seeds as small_n,
        s.mean as small_mean,
        s.sd as small_sd,
        s.ci_low as small_ci_low,
        s.ci_high as small_ci_high,
        b.n_seeds as big_n,
        b.mean as big_mean,
        b.sd as big_sd,
        b.ci_low as big_ci_low,
        b.ci_high as big_ci_high
    from small as s
    full join big as b
        on b.algo = s.algo and b.condition is not distinct from s.condition and b.metric = s.metric
),
welch as (
    select
        pairs.*,
        big_mean - small_mean as diff,
        case when small_n >= 2 and big_n >= 2
            then sqrt(small_sd ^ 2 / small_n + big_sd ^ 2 / big_n) end as se,
        case when small_n >= 2 and big_n >= 2 and small_sd ^ 2 / small_n + big_sd ^ 2 / big_n > 0
            then (small_sd ^ 2 / small_n + big_sd ^ 2 / big_n) ^ 2 / (
                (small_sd ^ 2 / small_n) ^ 2 / (small_n - 1)
                + (big_sd ^ 2 / big_n) ^ 2 / (big_n - 1)
            ) end as df
    from pairs
)
select
    w.condition,
    w.algo,
    w.metric,
    params.small_grid,
    w.small_n,
    w.small_mean,
    w.small_ci_low,
    w.small_ci_high,
    params.big_grid,
    w.big_n,
    w.big_mean,
    w.big_ci_low,
    w.big_ci_high,
    w.diff,
    case when w.se = 0 then w.diff else w.diff - tq.t * w.se end as diff_ci_low,
    case when w.se = 0 then w.diff else w.diff + tq.t * w.se end as diff_ci_high
from welch as w
cross join params
left join t975 as tq on floor(w.df) >= tq.lo and floor(w.df) < tq.hi
left join conditions as co on co.condition = w.condition
order by
    w.metric,
    case w.algo when 'ppo' then 0 else 1 end,
    w.algo,
    co.display_order nulls last,
    w.condition
