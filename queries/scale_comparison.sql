-- late-training value of each metric per condition at 10x10 against 30x30, with 95% CIs and the 30x30 - 10x10 difference
-- Same late window, per-seed values, CI and Welch rules as ablation.sql (see its header);
-- `set variable small_grid = 10` / `big_grid = 30` pick the two grid sizes compared.
-- diff = big mean - small mean; its CI uses Welch's standard error and df, null when a side has n < 2.
-- Episodes are 500 steps at 10x10 and 1000 at 30x30, so the metrics to compare across sizes are
-- rates: predatory_rate (predatory zaps per 1,000 agent-steps) and sustainability_share (mean step
-- of eating / episode length); predatory_zaps and sustainability stay per episode and in steps.
-- late_hits: the hits behind retribution_ratio (all hits in a run's late window, mean over seeds).
with
params as (
    select
        case
            when f is null then 0.1
            when f > 0 and f <= 1 then f
            else error('late_fraction must be in (0, 1]')
        end as late_fraction,
        coalesce(try_cast(getvariable('small_grid') as bigint), 10) as small_grid,
        coalesce(try_cast(getvariable('big_grid') as bigint), 30) as big_grid
    from (select try_cast(getvariable('late_fraction') as double) as f)
),
tq(lo, hi, t) as (
    values
        (1, 2, 12.7062), (2, 3, 4.3027), (3, 4, 3.1824), (4, 5, 2.7764), (5, 6, 2.5706),
        (6, 7, 2.4469), (7, 8, 2.3646), (8, 9, 2.3060), (9, 10, 2.2622), (10, 11, 2.2281),
        (11, 12, 2.2010), (12, 13, 2.1788), (13, 14, 2.1604), (14, 15, 2.1448), (15, 16, 2.1314),
        (16, 17, 2.1199), (17, 18, 2.1098), (18, 19, 2.1009), (19, 20, 2.0930), (20, 21, 2.0860),
        (21, 22, 2.0796), (22, 23, 2.0739), (23, 24, 2.0687), (24, 25, 2.0639), (25, 26, 2.0595),
        (26, 27, 2.0555), (27, 28, 2.0518), (28, 29, 2.0484), (29, 30, 2.0452), (30, 40, 2.0423),
        (40, 60, 2.0211), (60, 120, 2.0003), (120, 1000, 1.9799), (1000, 9223372036854775807, 1.9600)
),
-- hits classified by the ledger rule: the view ledger_hits (queries/_ledger_hits.sql)
classified as (
    select * from ledger_hits
),
hit_counts as (
    select
        run_id,
        episode,
        count(*) filter (where not retribution) as predation,
        count(*) filter (where retribution) as retribution
    from classified
    group by run_id, episode
),
ep as (
    select
        run_id,
        episode,
        any_value(condition) as condition,
        any_value(grid_size) as grid_size,
        any_value(seed) as seed,
        min(global_step) as global_step,
        max(steps) as steps,
        count(*) as n_agents,
        sum("return") as total_return,
        sum(frozen_steps) as frozen_steps
    from episodes
    group by run_id, episode
),
ranked as (
    select
        run_id,
        episode,
        apples,
        row_number() over (partition by run_id, episode order by apples) as i,
        count(*) over (partition by run_id, episode) as n,
        sum(apples) over (partition by run_id, episode) as total
    from episodes
),
gini as (
    select
        run_id,
        episode,
        case
            when max(total) = 0 then 0.0
            else sum((2 * i - n - 1) * apples)::double / (max(n) * max(total))
        end as gini
    from ranked
    group by run_id, episode
),
eaten as (
    select run_id, episode, avg(t)::double as mean_t
    from events
    where event_type = 'APPLE_EATEN'
    group by run_id, episode
),
per_episode as (
    select
        ep.run_id,
        ep.condition,
        ep.grid_size,
        ep.seed,
        ep.global_step,
        coalesce(hc.predation, 0)::double as predatory_zaps,
        1000.0 * coalesce(hc.predation, 0) / nullif(ep.n_agents * ep.steps, 0) as predatory_rate,
        coalesce(hc.retribution, 0) as retribution_hits,
        coalesce(hc.predation, 0) + coalesce(hc.retribution, 0) as all_hits,
        ep.total_return::double / nullif(ep.steps, 0) as efficiency,
        1.0 - gini.gini as equality,
        eaten.mean_t as sustainability,
        eaten.mean_t / nullif(ep.steps, 0) as sustainability_share,
        (ep.n_agents * ep.steps - ep.frozen_steps)::double / nullif(ep.steps, 0) as peace
    from ep
    join gini using (run_id, episode)
    left join hit_counts as hc using (run_id, episode)
    left join eaten using (run_id, episode)
),
late as (
    select per_episode.*
    from per_episode, params
    qualify global_step >= (1 - params.late_fraction) * max(global_step) over (partition by run_id)
),
per_run as (
    select
        run_id,
        condition,
        grid_size,
        seed,
        avg(predatory_zaps) as predatory_zaps,
        avg(predatory_rate) as predatory_rate,
        sum(retribution_hits)::double / nullif(sum(all_hits), 0) as retribution_ratio,
        sum(all_hits)::double as late_hits,
        avg(efficiency) as efficiency,
        avg(equality) as equality,
        avg(sustainability) as sustainability,
        avg(sustainability_share) as sustainability_share,
        avg(peace) as peace
    from late
    group by run_id, condition, grid_size, seed
),
per_seed as (
    select
        condition,
        grid_size,
        seed,
        avg(predatory_zaps) as predatory_zaps,
        avg(predatory_rate) as predatory_rate,
        avg(retribution_ratio) as retribution_ratio,
        avg(late_hits) as late_hits,
        avg(efficiency) as efficiency,
        avg(equality) as equality,
        avg(sustainability) as sustainability,
        avg(sustainability_share) as sustainability_share,
        avg(peace) as peace
    from per_run
    group by condition, grid_size, seed
),
long as (
    unpivot per_seed
    on predatory_zaps, predatory_rate, retribution_ratio, late_hits, efficiency, equality,
        sustainability, sustainability_share, peace
    into name metric value value
),
stats as (
    select
        condition,
        grid_size,
        metric,
        count(value) as n_seeds,
        avg(value) as mean,
        stddev_samp(value) as sd
    from long
    group by condition, grid_size, metric
),
with_ci as (
    select s.*, s.mean - tq.t * s.sd / sqrt(s.n_seeds) as ci_low, s.mean + tq.t * s.sd / sqrt(s.n_seeds) as ci_high
    from stats as s
    left join tq on s.n_seeds - 1 >= tq.lo and s.n_seeds - 1 < tq.hi
),
small as (
    select with_ci.* from with_ci, params where with_ci.grid_size = params.small_grid
),
big as (
    select with_ci.* from with_ci, params where with_ci.grid_size = params.big_grid
),
pairs as (
    select
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
    full join big as b on b.condition is not distinct from s.condition and b.metric = s.metric
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
left join tq on floor(w.df) >= tq.lo and floor(w.df) < tq.hi
order by
    w.metric,
    case w.condition
        when 'baseline' then 0 when 'tvt' then 1 when 'matchmaker' then 2 when 'full' then 3 else 4
    end,
    w.condition
