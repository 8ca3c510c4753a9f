-- equality E per episode (Perolat et al. 2017): 1 - Gini coefficient of the agents' apples
-- Gini = mean absolute difference over all ordered pairs (i = j included) / (2 * mean), computed
-- from the sorted values as sum_i (2i - n - 1) x_(i) / (n * sum x); Gini = 0 when all apples are 0.
with ranked as (
    select
        run_id,
        episode,
        apples,
        row_number() over (partition by run_id, episode order by apples) as i,
        count(*) over (partition by run_id, episode) as n,
        sum(apples) over (partition by run_id, episode) as total
    from episodes
),
gini as (
    select
        run_id,
        episode,
        case
            when max(total) = 0 then 0.0
            else sum((2 * i - n - 1) * apples)::double / (max(n) * max(total))
        end as gini
    from ranked
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
        count(*) as n_agents,
        sum(apples) as apples
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
    ep.n_agents,
    ep.apples,
    gini.gini,
    1.0 - gini.gini as equality
from ep
join gini using (run_id, episode)
order by ep.run_id, ep.episode
