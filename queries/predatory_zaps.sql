-- predation hits (predatory zaps) per run and episode, every episode included (ledger rule of docs/DESIGN.md)
with
-- hits classified by the ledger rule: the view ledger_hits (queries/_ledger_hits.sql)
classified as (
    select * from ledger_hits
),

episode_list as (
    select run_id, episode, min(global_step) as global_step
    from events
    where event_type = 'SPAWN' and t = 0
    group by run_id, episode
)

select
    l.run_id,
    l.episode,
    l.global_step,
    count(c.k) filter (where not c.retribution) as predatory_zaps,
    count(c.k) as hits
from episode_list as l
left join classified as c on c.run_id = l.run_id and c.episode = l.episode
group by l.run_id, l.episode, l.global_step
order by l.run_id, l.episode
