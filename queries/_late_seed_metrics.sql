-- (view) late_seed_metrics: every per-episode metric of the ablation, late in training, one row per learner x condition x grid size x seed
-- Late training: a run's episodes with global_step >= (1 - late_fraction) * the run's max global_step
-- (`set variable late_fraction = 0.1` to change it; default karmic.definitions.LATE_FRACTION = 0.2,
-- the last 20% of steps, which karmic.lake sets as default_late_fraction).
-- A seed's late value of a metric is its mean over those episodes; retribution_ratio is pooled
-- (retribution hits / all hits in the window); late_hits is the hits behind it. Replicates are
-- seeds: runs repeating the same (condition, grid_size, seed) are averaged first, so a rerun is
-- not counted as new evidence. The learner (algo: ppo | drqn, from runs.algo; ppo when a run does
-- not record one) splits every row. Hits are classified by the ledger rule of docs/DESIGN.md (the
-- view ledger_hits, counted per episode by episode_hits). predatory_rate: predatory zaps per 1,000 agent-steps; sustainability is the
-- mean step of eating (steps), sustainability_share divides it by the episode length (the forms
-- to compare across grid sizes, whose episodes differ in length). Used by queries/ablation.sql and
-- queries/scale_comparison.sql, which only aggregate (queries/_late_cell_stats.sql).
create or replace view late_seed_metrics as
with
params as (
    select
        case
            when f is null then coalesce(try_cast(getvariable('default_late_fraction') as double), 0.2)
            when f > 0 and f <= 1 then f
            else error('late_fraction must be in (0, 1]')
        end as late_fraction
    from (select try_cast(getvariable('late_fraction') as double) as f)
),
-- the learner of each run (runs.algo); a run without one (older run.json, no run.json) is ppo
run_algo as (
    select run_id, any_value(algo) as algo from runs group by run_id
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
        1000.0 * coalesce(hc.predation, 0) / nullif(ep.n_agents * ep.steps, 0) as predatory_rate,
        coalesce(hc.retribution, 0) as retribution_hits,
        coalesce(hc.predation, 0) + coalesce(hc.retribution, 0) as all_hits,
        ep.total_return::double / nullif(ep.steps, 0) as efficiency,
        1.0 - gini.gini as equality,
        eaten.mean_t as sustainability,
        eaten.mean_t / nullif(ep.steps, 0) as sustainability_share,
        (ep.n_agents * ep.steps - ep.frozen_steps)::double / nullif(ep.steps, 0) as peace
    from episode_totals as ep
    join episode_gini as gini using (run_id, episode)
    left join episode_hits as hc using (run_id, episode)
    left join episode_eating as eaten using (run_id, episode)
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
        avg(predatory_rate) as predatory_rate,
        sum(retribution_hits)::double / nullif(sum(all_hits), 0) as retribution_ratio,
        sum(all_hits)::double as late_hits,
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
        avg(predatory_rate) as predatory_rate,
        avg(retribution_ratio) as retribution_ratio,
        avg(late_hits) as late_hits,
        avg(efficiency) as efficiency,
        avg(equality) as equality,
        avg(sustainability) as sustainability,
        avg(sustainability_share) as sustainability_share,
        avg(peace) as peace
    from per_run
    group by algo, condition, grid_size, seed
)
select * from per_seed
