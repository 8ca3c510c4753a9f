-- late-training mean, sd, n seeds, 95% CI of each metric per learner x condition x grid size, and the difference from that learner's baseline with its CI
-- The late window, the per-seed values and their CIs are the shared views late_seed_metrics and
-- late_cell_stats (queries/_late_seed_metrics.sql, queries/_late_cell_stats.sql; `set variable
-- late_fraction = 0.1` to change the window, default 0.2 = karmic.definitions.LATE_FRACTION); this query only compares. Its metrics:
-- predatory_zaps, retribution_ratio, efficiency, equality, sustainability, sustainability_share, peace.
-- Difference from baseline (same learner, grid size and metric): mean - baseline mean, Welch
-- standard error sqrt(sd^2/n + sd_b^2/n_b) with Welch-Satterthwaite df, t from the view t975 at the
-- largest tabulated df <= df (conservative); null when either side has n < 2. Conditions come in
-- the registry's display order (the table conditions, karmic.conditions), names it lacks last.
with
cells as (
    select * from late_cell_stats
    where metric in ('predatory_zaps', 'retribution_ratio', 'efficiency', 'equality', 'sustainability',
                     'sustainability_share', 'peace')
),
welch as (
    select
        s.algo,
        s.condition,
        s.grid_size,
        s.metric,
        b.mean as baseline_mean,
        s.mean - b.mean as diff,
        case when s.n_seeds >= 2 and b.n_seeds >= 2
            then sqrt(s.sd ^ 2 / s.n_seeds + b.sd ^ 2 / b.n_seeds) end as se,
        case when s.n_seeds >= 2 and b.n_seeds >= 2
            and s.sd ^ 2 / s.n_seeds + b.sd ^ 2 / b.n_seeds > 0
            then (s.sd ^ 2 / s.n_seeds + b.sd ^ 2 / b.n_seeds) ^ 2 / (
                (s.sd ^ 2 / s.n_seeds) ^ 2 / (s.n_seeds - 1)
                + (b.sd ^ 2 / b.n_seeds) ^ 2 / (b.n_seeds - 1)
            ) end as df
    from cells as s
    join cells as b
        on b.condition = 'baseline' and b.algo = s.algo and b.grid_size = s.grid_size and b.metric = s.metric
    where s.condition is distinct from 'baseline'
),
diffs as (
    select
        w.*,
        -- se = 0 (no spread on either side): the difference is exact at this sample
        case when w.se = 0 then w.diff else w.diff - tq.t * w.se end as diff_ci_low,
        case when w.se = 0 then w.diff else w.diff + tq.t * w.se end as diff_ci_high
    from welch as w
    left join t975 as tq on floor(w.df) >= tq.lo and floor(w.df) < tq.hi
)
select
    c.condition,
    c.algo,
    c.grid_size,
    c.metric,
    c.n_seeds,
    c.mean,
    c.sd,
    c.ci_low,
    c.ci_high,
    d.baseline_mean,
    d.diff,
    d.diff_ci_low,
    d.diff_ci_high
from cells as c
left join diffs as d using (algo, condition, grid_size, metric)
left join conditions as co on co.condition = c.condition
order by
    c.grid_size,
    c.metric,
    case c.algo when 'ppo' then 0 else 1 end,
    c.algo,
    co.display_order nulls last,
    c.condition
