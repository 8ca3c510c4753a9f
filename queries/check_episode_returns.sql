-- data check: episode rows whose return disagrees with the events and the run's reward config (expect none)
with cfg as (
    select
        run_id,
        coalesce(json_extract(config, '$.apple_reward')::double, 1.0) as apple_reward,
        coalesce(json_extract(config, '$.hit_penalty')::double, -0.5) as hit_penalty,
        coalesce(json_extract(config, '$.fire_cost')::double, 0.0) as fire_cost
    from runs
),

per_agent as (
    select
        run_id,
        episode,
        agent,
        count(*) filter (where event_type = 'APPLE_EATEN') as apples,
        count(*) filter (where event_type = 'ZAP_FIRED') as fired
    from events
    group by run_id, episode, agent
),

victims as (
    select run_id, episode, target as agent, count(*) as hit
    from events
    where event_type = 'ZAP_HIT'
    group by run_id, episode, target
),

expected as (
    select
        e.run_id,
        e.episode,
        e.agent,
        e."return",
        coalesce(p.apples, 0) * c.apple_reward
        + coalesce(v.hit, 0) * c.hit_penalty
        + coalesce(p.fired, 0) * c.fire_cost as from_events
    from episodes as e
    join cfg as c using (run_id)
    left join per_agent as p using (run_id, episode, agent)
    left join victims as v using (run_id, episode, agent)
)

select run_id, episode, agent, "return", from_events
from expected
where abs("return" - from_events) > 1e-6
order by run_id, episode, agent
