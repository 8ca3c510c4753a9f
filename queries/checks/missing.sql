-- a finished run without every episode it ran: episodes 0 .. E-1 in events, episodes and actions
with want as (
    select run_id, expected_episodes as e from _runs
    where status in ('completed', 'finished') and expected_episodes is not null
),
have as (
    select 'events' as tbl, run_id, count(distinct episode) as n, max(episode) as hi from events group by run_id
    union all select 'episodes', run_id, count(distinct episode), max(episode) from episodes group by run_id
    union all select 'actions', run_id, count(distinct episode), max(episode) from actions group by run_id
)
select format('missing: {} of run {}: {} of its {} episodes (episodes 0 .. {}, highest present {})',
              w.tbl, w.run_id, coalesce(h.n, 0), w.e, w.e - 1, coalesce(h.hi::varchar, 'none')) as problem
from (select tbl, run_id, e from want, (values ('events'), ('episodes'), ('actions')) v(tbl)) w
left join have h using (tbl, run_id)
where (w.tbl <> 'actions' or w.run_id in (select run_id from actions))  -- runs that log actions
  and (coalesce(h.n, 0) <> w.e or coalesce(h.hi, -1) <> w.e - 1)
order by problem
