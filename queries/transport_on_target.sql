-- per run, transport mode and episode: the share of transported |value| landing where the agent hit the one who later hit it, against that step kind's base rate in the memory window
-- From the view transport_targets (queries/_transport_targets.sql; the window is the run's
-- memory_size, `--param memory_size=N` to set one). on_target_share: |value| on such steps / all |value|; base_rate: the |value|-weighted mean,
-- over the transports, of the share of such steps in the memory window before the source: what
-- value dropped at random inside the window would give. Semantic matching is on target by
-- construction (share 1); a sham or yoked transport should sit near the base rate; a learned transport that found the
-- culprit's step on its own sits above it. lift = on_target_share / base_rate.
select
    run_id,
    mode,
    source_episode as episode,
    count(*) as transports,
    sum(abs(amount)) as abs_amount,
    coalesce(sum(abs(amount)) filter (where on_target), 0.0) / nullif(sum(abs(amount)), 0) as on_target_share,
    sum(abs(amount) * base_rate) / nullif(sum(abs(amount)), 0) as base_rate,
    coalesce(sum(abs(amount)) filter (where on_target), 0.0) / nullif(sum(abs(amount) * base_rate), 0) as lift
from transport_targets
group by run_id, mode, source_episode
order by run_id, mode, episode
