-- (view) study_eval_values: an evaluation metric of the focal agents per evaluation, cell and seed
-- From study_eval_rows: the rows of results/<study>/evaluations.json (one per eval run and role,
-- queries/eval_summary.sql's columns, with evaluation, grid_size, level, seed). The focal agents
-- are role `solo` (solo) or `focal` (solo-frozen, cross-play); one eval run per evaluation, grid
-- size, level and seed, so each seed's value is that run's (rows repeating one are averaged).
-- The metrics are pipelines.study.EVAL_METRICS; a prediction with source = "evaluation" reads them
-- (queries/study/verdicts.sql), its seeds the replicates as a training prediction's are.
create or replace view study_eval_values as
select evaluation, grid_size, level, metric, seed, avg(value) as value, count(*) as runs
from study_eval_rows,
lateral (
    values
        ('apples_per_agent_step', apples_per_agent_step),
        ('hits_taken_per_agent_step', hits_taken_per_agent_step),
        ('hits_given_per_agent_step', hits_given_per_agent_step),
        ('predation_per_encounter', predation_per_encounter)
) as v(metric, value)
where role in ('solo', 'focal') and v.value is not null
group by all
