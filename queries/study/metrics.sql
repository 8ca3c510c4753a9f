-- study metrics: one row per run x episode of a study's runs, with every count its metrics need
-- Reads the lake's views (episodes, ledger_hits, ledger_debt) and the study's plan, the table
-- study_cells(run_id, condition, grid_size, level, seed, scripted) that `karmic study report`
-- registers. This is what results/<study>/metrics.parquet holds: the verdicts, cell tables and
-- figures are computed from it alone (queries/study/verdicts.sql, cells.sql, curves.sql).
-- hits = ZAP_HIT events; predatory / retribution hits by the ledger rule (docs/DESIGN.md);
-- total_debt = the run's ledger (one per env stream) summed over pairs at the episode's end.
with
cells as (
    select * from study_cells
),

ep as (
    select
        e.run_id,
        e.episode,
        min(e.global_step) as global_step,
        count(*) as n_agents,
        max(e.steps) as steps,
        sum(e."return") as total_return,
        sum(e.apples) as apples,
        sum(e.zaps_fired) as zaps_fired,
        sum(e.zaps_hit) as hits,
        sum(e.frozen_steps) as frozen_steps
    from episodes as e
    semi join cells as c on c.run_id = e.run_id
    group by e.run_id, e.episode
),

hit_class as (
    select
        run_id,
        episode,
        count(*) filter (where not retribution) as predatory_hits,
        count(*) filter (where retribution) as retribution_hits
    from ledger_hits
    where run_id in (select run_id from cells)
    group by run_id, episode
),

debt as (
    select run_id, episode, sum(debt) as total_debt
    from ledger_debt
    where run_id in (select run_id from cells)
    group by run_id, episode
)

select
    c.level,
    c.condition,
    c.grid_size::int as grid_size,
    c.seed::bigint as seed,
    c.scripted::boolean as scripted,
    ep.run_id,
    ep.episode,
    ep.global_step,
    ep.n_agents::int as n_agents,
    ep.steps::int as steps,
    (ep.n_agents * ep.steps)::bigint as agent_steps,
    ep.total_return::double as total_return,
    ep.apples::bigint as apples,
    ep.zaps_fired::bigint as zaps_fired,
    ep.hits::bigint as hits,
    coalesce(h.predatory_hits, 0)::bigint as predatory_hits,
    coalesce(h.retribution_hits, 0)::bigint as retribution_hits,
    ep.frozen_steps::bigint as frozen_steps,
    coalesce(d.total_debt, 0.0)::double as total_debt
from ep
join cells as c on c.run_id = ep.run_id
left join hit_class as h on h.run_id = ep.run_id and h.episode = ep.episode
left join debt as d on d.run_id = ep.run_id and d.episode = ep.episode
order by c.grid_size, c.level, c.condition, c.seed, ep.run_id, ep.episode
