-- per run, episode and agent: apples, return, hits given and taken, predation, encounters, predation per encounter, and an eval run's role
-- From the episodes table (apples, return, zaps_hit = hits given, times_hit = hits taken,
-- encounters), the view ledger_hits (predation = hits given that the ledger rule calls predation,
-- retribution the others) and, for runs of kind eval (`karmic evaluate`), the eval_agents table:
-- role (focal | background | solo | frozen) and the policy the agent played. Equality can be
-- recomputed from these rows; predation_per_encounter is null when the agent met nobody or the
-- run predates the encounter count.
with
by_ledger as (
    select
        run_id,
        episode,
        agent,
        count(*) filter (where not retribution) as predation,
        count(*) filter (where retribution) as retribution
    from ledger_hits
    group by run_id, episode, agent
)

select
    e.run_id,
    e.condition,
    e.episode,
    e.global_step,
    e.agent,
    a.role,
    a.policy,
    e.steps,
    e.apples,
    e."return",
    e.apples::double / nullif(e.steps, 0) as apples_per_step,
    e.zaps_fired,
    e.zaps_hit as hits_given,
    e.times_hit as hits_taken,
    coalesce(l.predation, 0) as predation,
    coalesce(l.retribution, 0) as retribution,
    e.frozen_steps,
    e.encounters,
    coalesce(l.predation, 0)::double / nullif(e.encounters, 0) as predation_per_encounter
from episodes as e
left join by_ledger as l using (run_id, episode, agent)
left join eval_agents as a using (run_id, agent)
order by e.run_id, e.episode, e.agent
