-- welfare and mechanism per episode: Perolat et al.'s efficiency, equality, sustainability, peace; encounters, predation per encounter, rigged pairs and retaliation
-- One row per (run, episode), from the views episode_totals, episode_eating, episode_hits and
-- episode_welfare (queries/_episode_totals.sql, _episode_social.sql, _episode_welfare.sql);
-- definitions in docs/metrics-welfare.md. N agents, T steps.
--   efficiency        sum of returns / T (Perolat et al. 2017's U); per_agent_step: / (N T)
--   equality          1 - Gini of the agents' returns (Perolat's E; null when they sum to <= 0);
--                     equality_apples: 1 - Gini of the apples (equality.sql)
--   sustainability    mean t of the episode's APPLE_EATEN events (Perolat's S; null: no apple)
--   peace             (N T - frozen agent-steps) / T (Perolat's P); peace_share: / (N T)
--   encounters        agent-steps with another agent within zap range; predation_per_encounter
--                     = predation hits (ledger rule) / encounters (null when none, or not recorded)
--   rigged_pairs, rigged_pairs_hit_back, retaliation_rate = hit back / rigged pairs (null: none)
select
    t.run_id,
    t.condition,
    t.grid_size,
    t.seed,
    t.episode,
    t.global_step,
    t.steps,
    t.n_agents,
    t.total_return,
    t.total_return::double / nullif(t.steps, 0) as efficiency,
    t.total_return::double / nullif(t.agent_steps, 0) as efficiency_per_agent_step,
    1.0 - w.gini_returns as equality,
    1.0 - g.gini as equality_apples,
    eat.mean_t as sustainability,
    (t.n_agents * t.steps - t.frozen_steps)::double / nullif(t.steps, 0) as peace,
    1.0 - t.frozen_steps::double / nullif(t.n_agents * t.steps, 0) as peace_share,
    t.apples,
    t.hits,
    coalesce(h.predation, 0) as predation,
    coalesce(h.retribution, 0) as retribution,
    w.encounters,
    coalesce(h.predation, 0)::double / nullif(w.encounters, 0) as predation_per_encounter,
    w.rigged_spawns,
    w.rigged_pairs,
    w.rigged_pairs_hit_back,
    w.rigged_hits_back,
    w.rigged_pairs_hit_back::double / nullif(w.rigged_pairs, 0) as retaliation_rate
from episode_totals as t
join episode_welfare as w using (run_id, episode)
left join episode_gini as g using (run_id, episode)
left join episode_eating as eat using (run_id, episode)
left join episode_hits as h using (run_id, episode)
order by t.run_id, t.episode
