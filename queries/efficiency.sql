-- efficiency U per episode (Perolat et al. 2017): sum of all agents' returns / episode length T
-- One row per (run, episode). T = the episode's steps (max over its agents); U is null if T = 0.
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
        sum("return") as total_return
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
    total_return,
    total_return::double / nullif(steps, 0) as efficiency
from ep
order by run_id, episode
