-- sustainability S per episode (Perolat et al. 2017): mean step t of the episode's APPLE_EATEN events
-- The mean is over all apple events of the episode (every apple weighs the same); S is null when
-- no apple was eaten, since "when apples are eaten" is then undefined.
with eaten as (
    select
        run_id,
        episode,
        avg(t)::double as mean_t,
        count(*) as apples_eaten
    from events
    where event_type = 'APPLE_EATEN'
    group by run_id, episode
),
ep as (
    select
        run_id,
        episode,
        any_value(condition) as condition,
        any_value(grid_size) as grid_size,
        any_value(seed) as seed,
        min(global_step) as global_step,
        max(steps) as steps
    from episodes
    group by run_id, episode
)
select
    ep.run_id,
    ep.condition,
    ep.grid_size,
    ep.seed,
    ep.episode,
    ep.global_step,
    ep.steps,
    coalesce(eaten.apples_eaten, 0) as apples_eaten,
    eaten.mean_t as sustainability
from ep
left join eaten using (run_id, episode)
order by ep.run_id, ep.episode
