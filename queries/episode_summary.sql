-- per run and episode: steps, total return, apples, zaps fired and hit, frozen agent-steps
select
    run_id,
    episode,
    min(global_step) as global_step,
    any_value(condition) as condition,
    any_value(grid_size) as grid_size,
    any_value(seed) as seed,
    count(*) as agents,
    max(steps) as steps,
    sum("return") as total_return,
    sum(apples) as apples,
    sum(zaps_fired) as zaps_fired,
    sum(zaps_hit) as zaps_hit,
    sum(frozen_steps) as frozen_steps
from episodes
group by run_id, episode
order by run_id, episode
