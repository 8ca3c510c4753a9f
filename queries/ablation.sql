-- late-training mean, sd, n seeds, 95% CI of each metric per learner x condition x grid size, and the difference from that learner's baseline with its CI
-- Late training: a run's episodes with global_step >= (1 - late_fraction) * the run's max global_step
-- (`set variable late_fraction = 0.2` to change it; default 0.1, i.e. the last 10% of steps).
-- A seed's late value of a metric is its mean over those episodes; retribution_ratio is pooled
-- (retribution hits / all hits in the window). Replicates are seeds: runs repeating the same
-- (condition, grid_size, seed) are averaged first, so a rerun is not counted as new evidence.
-- 95% CI = mean +- t(0.975, n - 1) * sd / sqrt(n); t from the table below (df 1..30, 40, 60, 120,
-- 1000), using the largest tabulated df <= df (conservative). n = 1: sd and CI are null.
-- Difference from baseline (same grid size and metric): mean - baseline mean, Welch standard error
-- sqrt(sd^2/n + sd_b^2/n_b) with Welch-Satterthwaite df; null when either side has n < 2.
-- The learner (algo: ppo | drqn, from runs.algo; ppo when a run does not record one) splits every
-- group, so the two learners' seeds never pool and each condition is compared with its own learner's
-- baseline.
-- Hits are classified by the ledger rule of docs/DESIGN.md (the CTEs of queries/predatory_zaps.sql).
-- sustainability is the mean step of eating (steps); sustainability_share divides it by the
-- episode length, the form to compare across grid sizes whose episodes differ in length.
with
params as (
    select
        case
            when f is null then 0.1
            when f > 0 and f <= 1 then f
            else error('late_fraction must be in (0, 1]')
        end as late_fraction
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
-- the learner of each run (runs.algo); a run without one (older run.json, no run.json) is ppo
run_algo as (
    select run_id, any_value(algo) as algo from runs group by run_id
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
        coalesce(run_algo.algo, 'ppo') as algo,
        ep.condition,
        ep.grid_size,
        ep.seed,
        ep.global_step,
        coalesce(hc.predation, 0)::double as predatory_zaps,
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
    left join run_algo using (run_id)
),
late as (
    select per_episode.*
    from per_episode, params
    qualify global_step >= (1 - params.late_fraction) * max(global_step) over (partition by run_id)
),
per_run as (
    select
        run_id,
        algo,
        condition,
        grid_size,
        seed,
        avg(predatory_zaps) as predatory_zaps,
        sum(retribution_hits)::double / nullif(sum(all_hits), 0) as retribution_ratio,
        avg(efficiency) as efficiency,
        avg(equality) as equality,
        avg(sustainability) as sustainability,
        avg(sustainability_share) as sustainability_share,
        avg(peace) as peace
    from late
    group by run_id, algo, condition, grid_size, seed
),
per_seed as (
    select
        algo,
        condition,
        grid_size,
        seed,
        avg(predatory_zaps) as predatory_zaps,
        avg(retribution_ratio) as retribution_ratio,
        avg(efficiency) as efficiency,
        avg(equality) as equality,
        avg(sustainability) as sustainability,
        avg(sustainability_share) as sustainability_share,
        avg(peace) as peace
    from per_run
    group by algo, condition, grid_size, seed
),
long as (
    unpivot per_seed
    on predatory_zaps, retribution_ratio, efficiency, equality, sustainability,
        sustainability_share, peace
    into name metric value value
),
stats as (
    select
        algo,
        condition,
        grid_size,
        metric,
        count(value) as n_seeds,
        -- in seed order: a float sum depends on the order rows arrive in, which a join may change
        avg(value order by seed) as mean,
        stddev_samp(value order by seed) as sd
    from long
    group by algo, condition, grid_size, metric
),
with_ci as (
    select s.*, s.mean - tq.t * s.sd / sqrt(s.n_seeds) as ci_low, s.mean + tq.t * s.sd / sqrt(s.n_seeds) as ci_high
    from stats as s
    left join tq on s.n_seeds - 1 >= tq.lo and s.n_seeds - 1 < tq.hi
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
    from stats as s
    join stats as b
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
    left join tq on floor(w.df) >= tq.lo and floor(w.df) < tq.hi
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
from with_ci as c
left join diffs as d using (algo, condition, grid_size, metric)
order by
    c.grid_size,
    c.metric,
    case c.algo when 'ppo' then 0 else 1 end,
    c.algo,
    case c.condition
        when 'baseline' then 0 when 'tvt' then 1 when 'matchmaker' then 2 when 'full' then 3 else 4
    end,
    c.condition
