-- per run, transport mode and target step type: how many transports, their signed total, mean and mean |amount|, and the share that took value away (amount < 0)
-- From the view transport_targets (queries/_transport_targets.sql); step types predatory_hit,
-- retribution_hit, no_hit (the agent's own landed hits at the target step, by the ledger rule).
-- The sign and size of what each kind of step received: punishment moved back is negative.
select
    run_id,
    mode,
    step_type,
    count(*) as transports,
    sum(amount) as total_amount,
    avg(amount) as mean_amount,
    avg(abs(amount)) as mean_abs_amount,
    avg(case when amount < 0 then 1.0 else 0.0 end) as negative_share,
    avg(lag) as mean_lag
from transport_targets
group by run_id, mode, step_type
order by run_id, mode, case step_type when 'predatory_hit' then 0 when 'retribution_hit' then 1 else 2 end
