-- rows of rounds no checkpoint covers (a killed or running training run) and rows of unfinished simulations
with train as (
    select run_id, status, last_checkpoint, committed_episodes from _runs
    where kind = 'train' and coalesce(status, '') <> 'completed'
),
past as (
    select t.run_id, count(distinct e.episode) as episodes, min(e.episode) as lo, max(e.episode) as hi
    from train t join (select run_id, episode from events union all select run_id, episode from episodes
                       union all select run_id, episode from actions) e
      on e.run_id = t.run_id and e.episode >= t.committed_episodes
    group by t.run_id
),
past_tr as (
    select t.run_id, count(distinct x."update") as updates
    from train t join tvt_transports x on x.run_id = t.run_id and x."update" >= coalesce(t.last_checkpoint, 0)
    group by t.run_id
),
sims as (
    select run_id, status from _runs where kind = 'simulate' and coalesce(status, '') not in ('completed', 'finished')  -- finished: lakes before one status vocabulary
      and (run_id in (select run_id from events) or run_id in (select run_id from episodes))
)
select format('uncommitted: run {} ({}): {} episode(s) {} .. {} past its last checkpoint (update {}): '
              || '`karmic train --resume {}` rewrites them identically, unless it is still running',
              t.run_id, coalesce(t.status, 'no status'), p.episodes, p.lo, p.hi,
              coalesce(t.last_checkpoint::varchar, 'none'), t.run_id) as problem
from train t join past p using (run_id)
union all
select format('uncommitted: run {} ({}): transports of {} update(s) past its last checkpoint (update {})',
              t.run_id, coalesce(t.status, 'no status'), x.updates, coalesce(t.last_checkpoint::varchar, 'none'))
from train t join past_tr x using (run_id)
union all
select format('uncommitted: simulated run {} did not finish (status {}): its rows are a partial simulation',
              run_id, coalesce(status, 'none'))
from sims
order by problem
