-- (view) episode_welfare: per run and episode, what the welfare and mechanism metrics need beyond
-- episode_totals (docs/metrics-welfare.md):
--   gini_returns  Gini of the agents' returns, sum_i (2i - n - 1) r_(i) / (n * sum r) over the
--                 sorted returns; null when the returns sum to <= 0 (undefined);
--   encounters    agent-steps begun on the board with another agent within zap range (the
--                 episodes column; null for runs written before it was counted);
--   rigged_pairs  pairs the matchmaker spawned side by side (SPAWN spawn_cause 'rigged', each
--                 pair's two events counted once), rigged_spawns the agents so spawned;
--   rigged_pairs_hit_back  those pairs in which a retribution hit (ledger rule, view ledger_hits:
--                 the victim owed the attacker) passed between the two within the episode;
--   rigged_hits_back  the retribution hits within rigged pairs.
create or replace view episode_welfare as
with
ret_ranked as (
    select
        run_id,
        episode,
        "return" as r,
        row_number() over (partition by run_id, episode order by "return", agent) as i,
        count(*) over (partition by run_id, episode) as n,
        sum("return") over (partition by run_id, episode) as total
    from episodes
),

gini as (
    select
        run_id,
        episode,
        case when max(total) > 0 then sum((2 * i - n - 1) * r)::double / (max(n) * max(total)) end as gini_returns
    from ret_ranked
    group by run_id, episode
),

enc as (
    select run_id, episode, sum(encounters)::bigint as encounters
    from episodes
    group by run_id, episode
),

rigged as (
    select run_id, episode, least(agent, target) as lo, greatest(agent, target) as hi, count(*) as spawns
    from events
    where event_type = 'SPAWN' and spawn_cause = 'rigged'
    group by run_id, episode, least(agent, target), greatest(agent, target)
),

back as (
    select r.run_id, r.episode, r.lo, r.hi, r.spawns, count(h.seq) as hits_back
    from rigged as r
    left join ledger_hits as h
        on h.run_id = r.run_id and h.episode = r.episode and h.retribution
        and least(h.agent, h.target) = r.lo and greatest(h.agent, h.target) = r.hi
    group by r.run_id, r.episode, r.lo, r.hi, r.spawns
),

mech as (
    select
        run_id,
        episode,
        count(*) as rigged_pairs,
        sum(spawns)::bigint as rigged_spawns,
        count(*) filter (where hits_back > 0) as rigged_pairs_hit_back,
        sum(hits_back)::bigint as rigged_hits_back
    from back
    group by run_id, episode
)

select
    t.run_id,
    t.episode,
    g.gini_returns,
    e.encounters,
    coalesce(m.rigged_spawns, 0)::bigint as rigged_spawns,
    coalesce(m.rigged_pairs, 0)::bigint as rigged_pairs,
    coalesce(m.rigged_pairs_hit_back, 0)::bigint as rigged_pairs_hit_back,
    coalesce(m.rigged_hits_back, 0)::bigint as rigged_hits_back
from episode_totals as t
left join gini as g on g.run_id = t.run_id and g.episode = t.episode
left join enc as e on e.run_id = t.run_id and e.episode = t.episode
left join mech as m on m.run_id = t.run_id and m.episode = t.episode;
