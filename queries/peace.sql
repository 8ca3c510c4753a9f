-- peace P per episode (Perolat et al. 2017): (N * T - frozen agent-steps) / T, N agents, T steps
-- Frozen agent-steps are the steps agents spent off the board after being zapped (frozen_steps).
-- P = N means nobody was ever zapped out; P is null if T = 0. From the view episode_totals.
select
    run_id,
    condition,
    grid_size,
    seed,
    episode,
    global_step,
    steps,
    n_agents,
    frozen_steps,
    (n_agents * steps - frozen_steps)::double / nullif(steps, 0) as peace
from episode_totals
order by run_id, episode
