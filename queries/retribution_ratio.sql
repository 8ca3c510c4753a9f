-- hits, retribution hits and retribution_ratio per run (with --by episode: per run and episode)
-- Hits are classified by the ledger rule of docs/DESIGN.md, computed here from the events alone.
with
-- hits classified by the ledger rule: the view ledger_hits (queries/_ledger_hits.sql)
classified as (
    select * from ledger_hits
)

,

-- each episode's first step, read only for --by episode (otherwise the condition is false when
-- the query is planned and the scan of the events is left out)
episode_start as (
    select run_id, episode, min(global_step) as global_step
    from events
    where event_type = 'SPAWN' and t = 0 and getvariable('by') = 'episode'
    group by run_id, episode
)

select
    c.run_id,
    case when getvariable('by') = 'episode' then c.episode end as episode,
    case when getvariable('by') = 'episode' then min(s.global_step) end as global_step,
    count(*) as hits,
    count(*) filter (where retribution) as retribution_hits,
    count(*) filter (where not retribution) as predation_hits,
    count(*) filter (where retribution) / count(*) as retribution_ratio
from classified as c
left join episode_start as s on s.run_id = c.run_id and s.episode = c.episode
group by c.run_id, case when getvariable('by') = 'episode' then c.episode end
order by c.run_id, episode
