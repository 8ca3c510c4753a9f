-- apples per agent-step over each run's training, by fractions of its own steps, per run (condition, grid size, seed)
-- A run's episodes are binned by how far into its training they started: bin = floor(n_bins *
-- global_step / (the run's last episode's global_step + 1)), n_bins bins (`set variable n_bins = 20`;
-- default 10, tenths). apples_per_agent_step = the bin's apples / its agent-steps (the episodes'
-- steps summed over their agents); episodes = how many episodes started in the bin. Runs of
-- different budgets line up by fraction, not by step: "never leaves the start" and "climbs, then
-- falls" read the same at any budget (docs/findings.md, the faster TVT method).
with
params as (
    select
        case
            when b is null then 10
            when b >= 1 then b
            else error('n_bins must be a positive integer')
        end as n_bins
    from (select try_cast(getvariable('n_bins') as bigint) as b)
),
ep as (
    select run_id, condition, grid_size, seed, global_step, apples, agent_steps
    from episode_totals  -- queries/_episode_totals.sql
),
last_step as (
    select run_id, max(global_step) as g from ep group by run_id
)
select
    ep.condition,
    ep.grid_size,
    ep.seed,
    ep.run_id,
    floor(p.n_bins * ep.global_step / (l.g + 1))::bigint as bin,
    sum(ep.apples)::double / nullif(sum(ep.agent_steps), 0) as apples_per_agent_step,
    count(*) as episodes
from ep
join last_step as l using (run_id)
cross join params as p
group by all
order by ep.condition, ep.grid_size, ep.seed, ep.run_id, bin
