-- rows written twice: a key of a run's table present more than once, or one round / update in two parts
with dup as (
    select 'events' as tbl, run_id, episode as unit, count(*) - 1 as extra
    from events group by run_id, episode, seq having count(*) > 1
    union all
    select 'episodes', run_id, episode, count(*) - 1 from episodes
    group by run_id, episode, agent having count(*) > 1
    union all
    select 'actions', run_id, episode, count(*) - 1 from actions
    group by run_id, episode, agent having count(*) > 1
    union all  -- an update's transports are one part: a second part holding it is a re-write
    select 'tvt_transports', run_id, "update", count(*) - count(*) filter (where filename = first_file)
    from (select *, min(filename) over (partition by run_id, "update") as first_file from tvt_transports)
    group by run_id, "update" having count(distinct filename) > 1
)
select format('duplicates: {} of run {}: {} row(s) written more than once ({} {} .. {})',
              tbl, run_id, sum(extra)::bigint,
              case when tbl = 'tvt_transports' then 'updates' else 'episodes' end,
              min(unit), max(unit)) as problem
from dup group by tbl, run_id order by run_id, tbl
