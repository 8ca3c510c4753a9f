-- karmic evaluate's runs (kind eval): per run and role, apples per agent-step, hits given and taken, predation and encounters per agent-episode (hits also per agent-step)
-- One row per (eval run, role, policy), with the run's focal and background policies, from the episodes, eval_agents (who played what) and the view
-- ledger_hits (predation = hits the ledger rule calls predation). Roles: solo (alone on the
-- board), focal (solo-frozen's agent, or cross-play's focal agents), background, frozen (no-op
-- agents); agents taken off the board (absent) are left out. Rates: apples / agent-steps;
-- per agent-episode: hits given, hits taken, predation, encounters (agent-steps with another agent
-- within zap range; predation_per_encounter = predation / encounters, null if none).
with
by_ledger as (
    select run_id, episode, agent, count(*) filter (where not retribution) as predation
    from ledger_hits
    group by run_id, episode, agent
),

rows_ as (
    select
        a.run_id, a.scenario, a.role, a.policy, e.episode, e.agent, e.steps, e.apples,
        e.zaps_fired, e.zaps_hit, e.times_hit, e.encounters, coalesce(l.predation, 0) as predation
    from eval_agents as a
    join episodes as e using (run_id, agent)
    left join by_ledger as l using (run_id, episode, agent)
    where a.role <> 'absent'
),

opponents as (
    select
        run_id,
        any_value(policy) filter (where role in ('solo', 'focal')) as focal,
        string_agg(distinct policy, ',' order by policy) filter (where role = 'background') as background
    from eval_agents
    group by run_id
)

select
    r.run_id,
    any_value(r.scenario) as scenario,
    r.role,
    r.policy,
    any_value(o.focal) as focal,
    any_value(o.background) as background,
    count(distinct r.agent) as agents,
    count(distinct r.episode) as episodes,
    sum(r.steps)::bigint as agent_steps,
    sum(r.apples)::bigint as apples,
    sum(r.apples)::double / nullif(sum(r.steps), 0) as apples_per_agent_step,
    avg(r.zaps_fired)::double as zaps_fired_per_agent_episode,
    avg(r.zaps_hit)::double as hits_given_per_agent_episode,
    avg(r.times_hit)::double as hits_taken_per_agent_episode,
    avg(r.predation)::double as predation_per_agent_episode,
    avg(r.encounters)::double as encounters_per_agent_episode,
    sum(r.predation)::double / nullif(sum(r.encounters), 0) as predation_per_encounter,
    -- per agent-step, as a study's evaluation predictions read them (pipelines.study.EVAL_METRICS)
    sum(r.zaps_hit)::double / nullif(sum(r.steps), 0) as hits_given_per_agent_step,
    sum(r.times_hit)::double / nullif(sum(r.steps), 0) as hits_taken_per_agent_step
from rows_ as r
left join opponents as o using (run_id)
group by r.run_id, r.role, r.policy
order by
    case any_value(r.scenario) when 'solo' then 0 when 'solo-frozen' then 1 else 2 end,
    focal, background, r.run_id, r.role desc
