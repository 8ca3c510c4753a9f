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
        ('transported_per_agent_step', transported_amount, agent_steps::double)
) as v(metric, num, den)
-- a column a results/ metrics.parquet predates reads as NULL (pipelines.study_report.ADDED_COLUMNS):
-- its metric is unknown there, not zero
where v.num is not null
