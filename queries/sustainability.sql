-- sustainability S per episode (Perolat et al. 2017): mean step t of the episode's APPLE_EATEN events
-- The mean is over all apple events of the episode (every apple weighs the same); S is null when
-- no apple was eaten, since "when apples are eaten" is then undefined. From the views
-- episode_totals and episode_eating (queries/_episode_totals.sql, _episode_social.sql).
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
from episode_totals as ep
left join episode_eating as eaten using (run_id, episode)
order by ep.run_id, ep.episode
