-- (internal view) every ZAP_HIT classified by the ledger rule of docs/DESIGN.md; karmic.lake.connect
-- creates it as the view ledger_hits, so every query shares one implementation of the rule
with recursive
-- the run's decay and its number of parallel envs (a batched run numbers its episodes
-- round * num_envs + env and keeps one ledger per env: stream = episode % num_envs)
run_cfg as materialized (
    select
        run_id,
        coalesce(try_cast(json_extract_string(config, '$.ledger_decay') as double), getvariable('default_ledger_decay')) as decay,
        greatest(coalesce(num_envs, 1), 1) as num_envs
    from runs
),

-- every hit with its pair (lo < hi by name), the stream-local episode and its rank in the pair
hits as materialized (
    select
        e.run_id,
        coalesce(c.decay, getvariable('default_ledger_decay')) as decay,
        e.episode % coalesce(c.num_envs, 1) as stream,
        e.episode // coalesce(c.num_envs, 1) as lep,
        e.episode,
        e.seq,
        e.global_step,
        e.agent,
        e.target,
        least(e.agent, e.target) as lo,
        greatest(e.agent, e.target) as hi,
        e.agent < e.target as by_lo,
        case when coalesce(e.apple_context, false) then 1.5 else 1.0 end::double as w,
        row_number() over (
            partition by e.run_id, e.episode % coalesce(c.num_envs, 1),
                least(e.agent, e.target), greatest(e.agent, e.target)
            order by e.episode, e.seq
        ) as k
    from events as e
    left join run_cfg as c on c.run_id = e.run_id
    where e.event_type = 'ZAP_HIT'
),

-- the ledger rule per pair on s = debt[lo][hi] - debt[hi][lo] (at most one side is positive);
-- debts decay by decay^(episodes elapsed) between hits; retribution = the victim owed the attacker
walk(run_id, stream, lo, hi, k, lep, s, retribution) as (
    select run_id, stream, lo, hi, k, lep, case when by_lo then w else -w end, false
    from hits
    where k = 1
    union all
    select
        h.run_id,
        h.stream,
        h.lo,
        h.hi,
        h.k,
        h.lep,
        case
            when h.by_lo and p.d < 0 then least(0::double, p.d + 1)
            when h.by_lo then p.d + h.w
            when p.d > 0 then greatest(0::double, p.d - 1)
            else p.d - h.w
        end,
        (h.by_lo and p.d < 0) or (not h.by_lo and p.d > 0)
    from walk as w
    join hits as h
        on h.run_id = w.run_id and h.stream = w.stream and h.lo = w.lo and h.hi = w.hi
        and h.k = w.k + 1
    cross join lateral (select w.s * power(h.decay, h.lep - w.lep) as d) as p
)

select h.*, w.s, w.retribution
from hits as h
join walk as w using (run_id, stream, lo, hi, k)
