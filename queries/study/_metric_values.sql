-- (view) study_metric_values: every study metric of every run x episode as (numerator, denominator)
-- A run's value of a metric over a set of episodes is sum(num) / sum(den): rates per agent-step
-- pool the window's agent-steps; retribution_ratio pools its hits; total_debt averages episodes;
-- semantic_on_target_share pools the semantic transport value of the window's episodes;
-- transported_per_agent_step: |value| moved by TVT's transports from the episodes / agent-steps.
-- frac: the episode's place in its run, global_step / the run's last global_step (0 for a
-- one-episode run); scripted policies do not learn, so their every episode is in every window.
create or replace view study_metric_values as
with
m as (
    select
        *,
        coalesce(global_step::double / nullif(max(global_step) over (partition by run_id), 0), 0.0) as frac
    from study_metrics
)
select
    level, condition, grid_size, seed, scripted, run_id, episode, global_step, frac, metric, num, den
from m,
lateral (
    values
        ('hits_per_agent_step', hits::double, agent_steps::double),
        ('predatory_hits_per_agent_step', predatory_hits::double, agent_steps::double),
        ('retribution_hits_per_agent_step', retribution_hits::double, agent_steps::double),
        ('zaps_fired_per_agent_step', zaps_fired::double, agent_steps::double),
        ('apples_per_agent_step', apples::double, agent_steps::double),
        ('return_per_agent_step', total_return, agent_steps::double),
        ('frozen_fraction', frozen_steps::double, agent_steps::double),
        ('retribution_ratio', retribution_hits::double, hits::double),
        ('total_debt', total_debt, 1.0),
        ('semantic_on_target_share', semantic_on_target_amount, semantic_amount),
        -- selectivity: how many of the zaps fired / the encounters met end in predation
        ('predatory_hits_per_zap', predatory_hits::double, zaps_fired::double),
        -- accuracy: how many of the zaps fired hit anyone (restraint aims; incapacity misses)
        ('hits_per_zap', hits::double, zaps_fired::double),
        -- an episode without encounters recorded (older results) is in neither sum
        ('predatory_hits_per_encounter', case when encounters is null then null else predatory_hits::double end, encounters::double),
        ('encounters_per_agent_step', encounters::double, agent_steps::double),
        -- welfare (Perolat et al. 2017), episode means: a null episode value counts in neither
        ('equality', equality, case when equality is null then null else 1.0 end),
        ('equality_apples', equality_apples, case when equality_apples is null then null else 1.0 end),
        ('sustainability', sustainability, case when sustainability is null then null else 1.0 end),
        -- the matchmaker's own mechanism: rigged pairs whose partner hit back in the episode
        ('rigged_hit_back_share', case when rigged_pairs is null then null else rigged_pairs_hit_back::double end, rigged_pairs::double),
        ('transported_per_agent_step', transported_amount, agent_steps::double)
) as v(metric, num, den)
-- a column a results/ metrics.parquet predates reads as NULL (pipelines.study_report.ADDED_COLUMNS):
-- its metric is unknown there, not zero
where v.num is not null
