-- per run and agent: zaps fired, hits landed, times hit, hits in an apple dispute (from events)
with shots as (
    select run_id, agent, count(*) as zaps_fired
    from events
    where event_type = 'ZAP_FIRED'
    group by run_id, agent
),

hits as (
    select
        run_id,
        agent,
        count(*) as hits,
        count(*) filter (where apple_context) as hits_apple_context
    from events
    where event_type = 'ZAP_HIT'
    group by run_id, agent
),

victims as (
    select run_id, target as agent, count(*) as times_hit
    from events
    where event_type = 'ZAP_HIT'
    group by run_id, target
),

agents as (
    select run_id, agent from shots
    union
    select run_id, agent from hits
    union
    select run_id, agent from victims
)

select
    a.run_id,
    a.agent,
    coalesce(s.zaps_fired, 0) as zaps_fired,
    coalesce(h.hits, 0) as hits,
    coalesce(v.times_hit, 0) as times_hit,
    coalesce(h.hits_apple_context, 0) as hits_apple_context
from agents as a
left join shots as s using (run_id, agent)
left join hits as h using (run_id, agent)
left join victims as v using (run_id, agent)
order by a.run_id, a.agent
