-- rows that belong to nothing: a run without run.json, episode rows without events, actions or transports without episode rows
with part_runs as (select distinct tbl, run_id from _partitions),
no_run as (
    select format('orphans: {} of run {}: no runs/run_id={}/run.json', tbl, run_id, run_id) as problem
    from part_runs where run_id not in (select run_id from _runs)
),
ep_no_events as (
    select run_id, count(*) as n, min(episode) as lo from (
        select distinct run_id, episode from episodes
        except select distinct run_id, episode from events)
    group by run_id
),
act_no_episode as (  -- a finished run's actions rows each have their episode's rows
    select run_id, count(*) as n, min(episode) as lo from (
        select distinct run_id, episode from actions
        except select distinct run_id, episode from episodes)
    where run_id in (select run_id from _runs where status in ('completed', 'finished'))
    group by run_id
),
tr_no_episode as (
    select run_id, count(*) as n, min(e) as lo from (
        select run_id, source_episode as e from tvt_transports
        union all select run_id, target_episode from tvt_transports
        except select run_id, episode from episodes)
    group by run_id
)
select problem from no_run
union all
select format('orphans: episodes of run {}: {} episode(s) without events (first {})', run_id, n, lo) from ep_no_events
union all
select format('orphans: actions of run {}: {} episode(s) without episode rows (first {})', run_id, n, lo) from act_no_episode
union all
select format('orphans: tvt_transports of run {}: {} episode(s) they link without episode rows (first {})', run_id, n, lo) from tr_no_episode
order by problem
