-- (view) episode_totals: one row per run and episode, the agents' episode rows summed
-- steps is the episode's length T (max over its agents), agent_steps the sum of the agents' steps,
-- n_agents the agents that have a row, hits the ZAP_HITs the agents landed; condition, grid_size and seed are the run's. The per-episode
-- metrics (efficiency, peace, sustainability, equality, the ablation's late window and the curves)
-- all start from this one definition.
create or replace view episode_totals as
select
    run_id,
    episode,
    any_value(condition) as condition,
    any_value(grid_size) as grid_size,
    any_value(seed) as seed,
    min(global_step) as global_step,
    max(steps) as steps,
    sum(steps) as agent_steps,
    count(*) as n_agents,
    sum("return") as total_return,
    sum(frozen_steps) as frozen_steps,
    sum(apples) as apples,
    sum(zaps_fired) as zaps_fired,
    sum(zaps_hit) as hits
from episodes
group by run_id, episode
