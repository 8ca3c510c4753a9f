-- debt per debtor/creditor pair at the end of each episode, after that episode's decay (debts > 0)
with
run_cfg as materialized (
    select
        run_id,
        coalesce(try_cast(json_extract_string(config, '$.ledger_decay') as double), getvariable('default_ledger_decay')) as decay,
        greatest(coalesce(num_envs, 1), 1) as num_envs
    from runs
),

-- hits classified by the ledger rule: the view ledger_hits (queries/_ledger_hits.sql)
classified as (
    select * from ledger_hits
),

-- episode ends per run and stream (every episode starts with SPAWN events at t = 0)
episode_list as (
    select e.run_id, e.episode, min(e.global_step) as global_step,
        e.episode % greatest(coalesce(any_value(c.num_envs), 1), 1) as stream,
        e.episode // greatest(coalesce(any_value(c.num_envs), 1), 1) as lep,
        coalesce(any_value(c.decay), getvariable('default_ledger_decay')) as decay
    from events as e
    left join run_cfg as c on c.run_id = e.run_id
    where e.event_type = 'SPAWN' and e.t = 0
    group by e.run_id, e.episode
),

-- the pair's state after its last hit in each episode that had one
last_in_episode as (
    select run_id, stream, lo, hi, lep, arg_max(s, k) as s
    from classified
    group by run_id, stream, lo, hi, lep
),

at_end as (
    select
        l.run_id,
        l.episode,
        l.global_step,
        h.lo,
        h.hi,
        h.s * power(l.decay, l.lep - h.lep + 1) as s
    from episode_list as l
    join last_in_episode as h
        on h.run_id = l.run_id and h.stream = l.stream and h.lep <= l.lep
    qualify row_number() over (
        partition by l.run_id, l.episode, h.lo, h.hi order by h.lep desc
    ) = 1
)

select
    run_id,
    episode,
    global_step,
    case when s > 0 then lo else hi end as debtor,
    case when s > 0 then hi else lo end as creditor,
    abs(s) as debt
from at_end
where s != 0
order by run_id, episode, debtor, creditor
