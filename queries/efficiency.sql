-- efficiency U per episode (Perolat et al. 2017): sum of all agents' returns / episode length T
-- One row per (run, episode), from the view episode_totals (queries/_episode_totals.sql).
-- T = the episode's steps (max over its agents); U is null if T = 0.
select
    run_id,
    condition,
    grid_size,
    seed,
    episode,
    global_step,
    steps,
    n_agents,
    total_return,
    total_return::double / nullif(steps, 0) as efficiency
from episode_totals
order by run_id, episode
