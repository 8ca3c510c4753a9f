-- per run, transport mode and episode: the share of transported |value| landing on predatory hits, on retribution hits and on steps without a hit
-- From the view transport_targets (queries/_transport_targets.sql): the step type is what the
-- agent's own landed hits at the target step were, by the ledger rule. A rule that blamed the
-- agent's aggression would put its value on predatory hits; value on retribution hits punishes
-- hitting back. Episode = the source step's episode. Signed totals say which way value moved.
select
    run_id,
    mode,
    source_episode as episode,
    count(*) as transports,
    sum(abs(amount)) as abs_amount,
    coalesce(sum(abs(amount)) filter (where step_type = 'predatory_hit'), 0.0) / nullif(sum(abs(amount)), 0) as predatory_share,
    coalesce(sum(abs(amount)) filter (where step_type = 'retribution_hit'), 0.0) / nullif(sum(abs(amount)), 0) as retribution_share,
    coalesce(sum(abs(amount)) filter (where step_type = 'no_hit'), 0.0) / nullif(sum(abs(amount)), 0) as no_hit_share,
    coalesce(sum(amount) filter (where step_type = 'predatory_hit'), 0.0) as predatory_amount,
    coalesce(sum(amount) filter (where step_type = 'retribution_hit'), 0.0) as retribution_amount,
    coalesce(sum(amount) filter (where step_type = 'no_hit'), 0.0) as no_hit_amount
from transport_targets
group by run_id, mode, source_episode
order by run_id, mode, episode
