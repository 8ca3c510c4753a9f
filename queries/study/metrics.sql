-- study metrics: one row per run x episode of a study's runs, with every count its metrics need
-- Reads the lake's views (episode_totals, episode_hits, ledger_debt, tvt_transports, events) and
-- the study's plan, the table study_cells(run_id, condition, grid_size, level, seed, scripted)
-- that `karmic study report` registers. This is what results/<study>/metrics.parquet holds: the verdicts, cell tables and
-- figures are computed from it alone (queries/study/verdicts.sql, cells.sql, curves.sql).
-- hits = ZAP_HIT events; predatory / retribution hits by the ledger rule (docs/DESIGN.md);
-- total_debt = the run's ledger (one per env stream) summed over pairs at the episode's end.
-- semantic_amount: |value| moved by semantic role matching (tvt_transports, mode 'semantic')
-- from a hit in this episode; semantic_on_target_amount: the part of it that landed on a step
-- where the agent had hit the one who hit it (the ZAP_HIT events at both ends say so).
-- Welfare and mechanism (docs/metrics-welfare.md; views episode_welfare, episode_gini,
-- episode_eating): equality = 1 - Gini of returns (null when they sum to <= 0), equality_apples
-- = 1 - Gini of apples, sustainability = mean t of APPLE_EATEN (null: none), encounters
-- (null: not recorded), rigged_pairs and rigged_pairs_hit_back. Efficiency is total_return /
-- steps and peace (n_agents * steps - frozen_steps) / steps, from the columns above.
-- transported_amount: |value| moved by every transport (learned and semantic) from a step of
-- this episode.
with
cells as (
    select * from study_cells
),

ep as (
    select
        e.run_id, e.episode, e.global_step, e.n_agents, e.steps, e.total_return, e.apples,
        e.zaps_fired, e.hits, e.frozen_steps
    from episode_totals as e
    semi join cells as c on c.run_id = e.run_id
),

hit_class as (
    select run_id, episode, predation as predatory_hits, retribution as retribution_hits
    from episode_hits
    where run_id in (select run_id from cells)
),

sem as (
    select
        row_number() over () as k,
        run_id, agent, source_episode, source_t, target_episode, target_t, abs(amount) as amount
    from tvt_transports
    where mode = 'semantic' and run_id in (select run_id from cells)
),

zap_hits as (
    select run_id, episode, t, agent as attacker, target as victim
    from events
    where event_type = 'ZAP_HIT' and run_id in (select run_id from cells)
),

-- who hit the agent at the transport's source step
sem_hitters as (
    select s.k, h.attacker as hitter
    from sem as s
    join zap_hits as h
        on h.run_id = s.run_id and h.episode = s.source_episode and h.t = s.source_t and h.victim = s.agent
),

sem_on_target as (
    select distinct s.k
    from sem as s
    join sem_hitters as sh on sh.k = s.k
    join zap_hits as h
        on h.run_id = s.run_id and h.episode = s.target_episode and h.t = s.target_t
        and h.attacker = s.agent and h.victim = sh.hitter
),

semantic as (
    select
        s.run_id,
        s.source_episode as episode,
        sum(s.amount) as semantic_amount,
        coalesce(sum(s.amount) filter (where o.k is not null), 0.0) as semantic_on_target_amount
    from sem as s
    left join sem_on_target as o on o.k = s.k
    group by s.run_id, s.source_episode
),

transported as (
    select run_id, source_episode as episode, sum(abs(amount)) as transported_amount
    from tvt_transports
    where run_id in (select run_id from cells)
    group by run_id, source_episode
),

debt as (
    select run_id, episode, sum(debt) as total_debt
    from ledger_debt
    where run_id in (select run_id from cells)
    group by run_id, episode
)

select
    c.level,
    c.condition,
    c.grid_size::int as grid_size,
    c.seed::bigint as seed,
    c.scripted::boolean as scripted,
    ep.run_id,
    ep.episode,
    ep.global_step,
    ep.n_agents::int as n_agents,
    ep.steps::int as steps,
    (ep.n_agents * ep.steps)::bigint as agent_steps,
    ep.total_return::double as total_return,
    ep.apples::bigint as apples,
    ep.zaps_fired::bigint as zaps_fired,
    ep.hits::bigint as hits,
    coalesce(h.predatory_hits, 0)::bigint as predatory_hits,
    coalesce(h.retribution_hits, 0)::bigint as retribution_hits,
    ep.frozen_steps::bigint as frozen_steps,
    coalesce(d.total_debt, 0.0)::double as total_debt,
    coalesce(sm.semantic_amount, 0.0)::double as semantic_amount,
    coalesce(sm.semantic_on_target_amount, 0.0)::double as semantic_on_target_amount,
    (1.0 - w.gini_returns)::double as equality,
    (1.0 - g.gini)::double as equality_apples,
    eat.mean_t::double as sustainability,
    w.encounters::bigint as encounters,
    w.rigged_pairs::bigint as rigged_pairs,
    w.rigged_pairs_hit_back::bigint as rigged_pairs_hit_back,
    coalesce(tp.transported_amount, 0.0)::double as transported_amount
from ep
join cells as c on c.run_id = ep.run_id
left join hit_class as h on h.run_id = ep.run_id and h.episode = ep.episode
left join debt as d on d.run_id = ep.run_id and d.episode = ep.episode
left join semantic as sm on sm.run_id = ep.run_id and sm.episode = ep.episode
left join episode_welfare as w on w.run_id = ep.run_id and w.episode = ep.episode
left join episode_gini as g on g.run_id = ep.run_id and g.episode = ep.episode
left join episode_eating as eat on eat.run_id = ep.run_id and eat.episode = ep.episode
left join transported as tp on tp.run_id = ep.run_id and tp.episode = ep.episode
order by c.grid_size, c.level, c.condition, c.seed, ep.run_id, ep.episode
