-- equality E per episode (Perolat et al. 2017): 1 - Gini coefficient of the agents' apples
-- Gini = mean absolute difference over all ordered pairs (i = j included) / (2 * mean), computed
-- from the sorted values as sum_i (2i - n - 1) x_(i) / (n * sum x); Gini = 0 when all apples are 0
-- (the view episode_gini, queries/_episode_social.sql; the episode from episode_totals).
select
    ep.run_id,
    ep.condition,
    ep.grid_size,
    ep.seed,
    ep.episode,
    ep.global_step,
    ep.n_agents,
    ep.apples,
    gini.gini,
    1.0 - gini.gini as equality
from episode_totals as ep
join episode_gini as gini using (run_id, episode)
order by ep.run_id, ep.episode
