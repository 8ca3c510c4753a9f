-- per rigged spawn: the pair the matchmaker placed side by side, and the retribution hits that passed between them within the episode
-- A rigged pair is two SPAWN events with spawn_cause 'rigged' naming each other (debtor and
-- creditor; the events do not say which is which, the ledger does: a retribution hit is one whose
-- victim owed its attacker, view ledger_hits). hit_back: at least one such hit between the two in
-- that episode. welfare.sql counts these per episode (rigged_pairs, rigged_pairs_hit_back).
with
rigged as (
    select run_id, episode, least(agent, target) as agent_a, greatest(agent, target) as agent_b
    from events
    where event_type = 'SPAWN' and spawn_cause = 'rigged'
    group by run_id, episode, least(agent, target), greatest(agent, target)
)

select
    r.run_id,
    r.episode,
    r.agent_a,
    r.agent_b,
    count(h.seq) filter (where h.retribution) as hits_back,
    count(h.seq) filter (where not h.retribution) as predation_between,
    min(h.global_step) filter (where h.retribution) as first_hit_back_step,
    count(h.seq) filter (where h.retribution) > 0 as hit_back
from rigged as r
left join ledger_hits as h
    on h.run_id = r.run_id and h.episode = r.episode
    and least(h.agent, h.target) = r.agent_a and greatest(h.agent, h.target) = r.agent_b
group by r.run_id, r.episode, r.agent_a, r.agent_b
order by r.run_id, r.episode, r.agent_a, r.agent_b
