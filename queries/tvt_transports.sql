-- tvt transports per run and mode: how much value moved, how far back, how much crossed episodes
with t as (
    select
        run_id,
        mode,
        amount,
        (source_episode - target_episode) as episodes_back,
        case when source_episode = target_episode then source_t - target_t end as steps_back
    from tvt_transports
)

select
    run_id,
    mode,
    count(*) as transports,
    round(sum(amount), 4) as total_amount,
    round(avg(abs(amount)), 4) as mean_abs_amount,
    round(avg(steps_back), 2) as mean_steps_back_within_episode,
    round(avg(case when episodes_back > 0 then 1.0 else 0.0 end), 4) as share_cross_episode
from t
group by run_id, mode
order by run_id, mode
