-- (view) episode_hits, episode_gini, episode_eating: per run and episode, the hits by the ledger
-- rule (predation, retribution: from the view ledger_hits), the Gini coefficient of the agents'
-- apples (sum_i (2i - n - 1) x_(i) / (n * sum x) over the sorted values; 0 when no apple was
-- eaten) and the eating (mean step t of APPLE_EATEN and how many). An episode with no hits or no
-- apples has no row in episode_hits / episode_eating.
create or replace view episode_hits as
select
    run_id,
    episode,
    count(*) filter (where not retribution) as predation,
    count(*) filter (where retribution) as retribution
from ledger_hits
group by run_id, episode;

create or replace view episode_gini as
with ranked as (
    select
        run_id,
        episode,
        apples,
        row_number() over (partition by run_id, episode order by apples) as i,
        count(*) over (partition by run_id, episode) as n,
        sum(apples) over (partition by run_id, episode) as total
    from episodes
)
select
    run_id,
    episode,
    case
        when max(total) = 0 then 0.0
        else sum((2 * i - n - 1) * apples)::double / (max(n) * max(total))
    end as gini
from ranked
group by run_id, episode;

create or replace view episode_eating as
select
    run_id,
    episode,
    avg(t)::double as mean_t,
    count(*) as apples_eaten
from events
where event_type = 'APPLE_EATEN'
group by run_id, episode;
