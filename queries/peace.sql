-- peace P per episode (Perolat et al. 2017): (N * T - frozen agent-steps) / T, N agents, T steps
-- Frozen agent-steps are the steps agents spent off the board after being zapped (frozen_steps).
-- P = N means nobody was ever zapped out; P is null if T = 0.
with ep as (
    select
        run_id,
        episode,
        any_value(condition) as condition,
        any_value(grid_size) as grid_size,
        any_value(seed) as seed,
        min(global_step) as global_step,
        max(steps) as steps,
        count(*) as n_agents,
        sum(frozen_steps) as frozen_steps
    from episodes
    group by run_id, episode
)
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
from ep
order by run_id, episode
