-- (internal view) transport_targets: every TVT transport (tvt_transports) with what its target step was.
-- Steps are stream times tau = (episode // num_envs) * episode length + t (one stream per env and
-- agent, as the trainer's memory). Per transport:
--   step_type: what the agent's own landed hits at the target step were, by the ledger rule
--     (ledger_hits): 'predatory_hit' (any predatory hit there), else 'retribution_hit', else 'no_hit';
--   on_target: at the target step the agent hit some X who then hit it at a step after that and
--     no later than the source step (semantic matching's target, by construction; for sham and
--     learned transports it can come out either way);
--   window_steps / eligible_steps / base_rate: the memory window (the memory_size steps before the
--     source, at most the stream's steps so far), how many of its steps are such on-target steps,
--     and their share: where value landing at random would be on target.
-- The window is the run's own memory_size (runs.memory_size, from its train_config); `--param
-- memory_size=N` sets it for every run; runs that record none use 1000 (TrainConfig's default).
create or replace view transport_targets as
with
geom as materialized (
    select
        e.run_id,
        max(e.steps)::bigint as ep_len,
        greatest(coalesce(any_value(r.num_envs), 1), 1)::bigint as num_envs,
        coalesce(try_cast(getvariable('memory_size') as bigint), any_value(r.memory_size), 1000)::bigint
            as memory_size
    from episode_totals as e
    left join runs as r on r.run_id = e.run_id
    group by e.run_id
),

tr as materialized (
    select
        row_number() over (order by t.run_id, t.update, t.agent, t.source_episode, t.source_t,
                                    t.target_episode, t.target_t, t.mode, t.head, t.amount) as k,
        t.run_id, t.update, t.mode, t.head, t.agent, t.amount,
        t.source_episode, t.source_t, t.target_episode, t.target_t,
        t.source_episode % g.num_envs as stream,
        (t.source_episode // g.num_envs) * g.ep_len + t.source_t as source_tau,
        (t.target_episode // g.num_envs) * g.ep_len + t.target_t as target_tau,
        g.memory_size
    from tvt_transports as t
    join geom as g on g.run_id = t.run_id
),

hits as materialized (
    select h.run_id, h.episode % g.num_envs as stream, h.global_step // g.num_envs as tau,
           h.agent, h.target, h.retribution
    from ledger_hits as h
    join geom as g on g.run_id = h.run_id
    where h.run_id in (select run_id from tr)
),

kinds as (
    select tr.k, bool_or(not h.retribution) as predatory, bool_or(h.retribution) as retribution
    from tr
    join hits as h
        on h.run_id = tr.run_id and h.stream = tr.stream and h.agent = tr.agent and h.tau = tr.target_tau
    group by tr.k
),

-- the agent's hits in the window whose victim hit it back by the source step
eligible as (
    select distinct tr.k, a.tau
    from tr
    join hits as a
        on a.run_id = tr.run_id and a.stream = tr.stream and a.agent = tr.agent
        and a.tau < tr.source_tau and a.tau >= tr.source_tau - tr.memory_size
    join hits as b
        on b.run_id = a.run_id and b.stream = a.stream and b.agent = a.target and b.target = a.agent
        and b.tau > a.tau and b.tau <= tr.source_tau
),

elig as (
    select k, count(*) as eligible_steps from eligible group by k
),

hit_on as (
    select distinct e.k from eligible as e join tr on tr.k = e.k and tr.target_tau = e.tau
)

select
    tr.k, tr.run_id, tr.update, tr.mode, tr.head, tr.agent, tr.amount,
    tr.source_episode, tr.source_t, tr.target_episode, tr.target_t,
    tr.source_tau - tr.target_tau as lag,
    case when kd.predatory then 'predatory_hit' when kd.retribution then 'retribution_hit' else 'no_hit' end
        as step_type,
    o.k is not null as on_target,
    least(tr.memory_size, tr.source_tau) as window_steps,
    coalesce(el.eligible_steps, 0) as eligible_steps,
    coalesce(el.eligible_steps, 0) / greatest(least(tr.memory_size, tr.source_tau), 1)::double as base_rate
from tr
left join kinds as kd on kd.k = tr.k
left join elig as el on el.k = tr.k
left join hit_on as o on o.k = tr.k
