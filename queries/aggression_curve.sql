-- predatory zaps per episode against global_step, per condition, grid size and seed (seed null: mean over seeds with 95% CI)
-- Episodes are binned by global_step: n_bins bins per grid size (`set variable n_bins = 40`;
-- default 20) of width ceil((max global_step + 1) / n_bins); step = the bin's midpoint.
-- Rows with a seed: that seed's mean predatory zaps per episode in the bin (runs repeating a seed
-- averaged), n = episodes. Rows with seed null: mean over seeds, sd, n = seeds, and the 95% CI
-- mean +- t(0.975, n - 1) * sd / sqrt(n) (t from the view t975, queries/_t975.sql; null when n = 1).
-- Hits are classified by the ledger rule of docs/DESIGN.md (the view episode_hits).
-- predatory_rate: predatory zaps per 1,000 agent-steps (agent-steps = the episode's steps summed
-- over its agents), averaged the same way; it is the column to compare across grid sizes, whose
-- episodes differ in length (500 steps at 10x10, 1000 at 30x30).
with
params as (
    select
        case
            when b is null then 20
            when b >= 1 then b
            else error('n_bins must be a positive integer')
        end as n_bins
    from (select try_cast(getvariable('n_bins') as bigint) as b)
),
tq as (
    select lo, hi, t from t975  -- queries/_t975.sql
),
hit_counts as (
    select * from episode_hits  -- queries/_episode_social.sql
),
ep as (
    select run_id, episode, condition, grid_size, seed, global_step, agent_steps from episode_totals
),
widths as (
    select grid_size, greatest(1, ceil((max(global_step) + 1) / params.n_bins))::bigint as width
    from ep, params
    group by grid_size, params.n_bins
),
per_episode as (
    select
        ep.run_id,
        ep.condition,
        ep.grid_size,
        ep.seed,
        ep.global_step // widths.width as bin,
        widths.width,
        coalesce(hc.predation, 0)::double as predatory_zaps,
        1000.0 * coalesce(hc.predation, 0) / nullif(ep.agent_steps, 0) as predatory_rate
    from ep
    join widths using (grid_size)
    left join hit_counts as hc using (run_id, episode)
),
per_run as (
    select run_id, condition, grid_size, seed, bin, any_value(width) as width,
        count(*) as episodes, avg(predatory_zaps) as predatory_zaps,
        avg(predatory_rate) as predatory_rate
    from per_episode
    group by run_id, condition, grid_size, seed, bin
),
per_seed as (
    select condition, grid_size, seed, bin, any_value(width) as width,
        sum(episodes) as n, avg(predatory_zaps) as predatory_zaps,
        avg(predatory_rate) as predatory_rate
    from per_run
    group by condition, grid_size, seed, bin
),
over_seeds as (
    select condition, grid_size, bin, any_value(width) as width, count(*) as n,
        avg(predatory_zaps) as predatory_zaps, stddev_samp(predatory_zaps) as sd,
        avg(predatory_rate) as predatory_rate, stddev_samp(predatory_rate) as rate_sd
    from per_seed
    group by condition, grid_size, bin
)
select
    condition, grid_size, seed, bin, (bin + 0.5) * width as step, n, predatory_zaps,
    null::double as sd, null::double as ci_low, null::double as ci_high,
    predatory_rate, null::double as rate_sd, null::double as rate_ci_low,
    null::double as rate_ci_high
from per_seed
union all
select
    o.condition, o.grid_size, null, o.bin, (o.bin + 0.5) * o.width, o.n, o.predatory_zaps,
    o.sd, o.predatory_zaps - tq.t * o.sd / sqrt(o.n), o.predatory_zaps + tq.t * o.sd / sqrt(o.n),
    o.predatory_rate, o.rate_sd, o.predatory_rate - tq.t * o.rate_sd / sqrt(o.n),
    o.predatory_rate + tq.t * o.rate_sd / sqrt(o.n)
from over_seeds as o
left join tq on o.n - 1 >= tq.lo and o.n - 1 < tq.hi
order by grid_size, condition, seed nulls first, bin
