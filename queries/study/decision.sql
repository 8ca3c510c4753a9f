-- a calibration study's choice of ecology: its pre-registered [decision] rule over study_cells
-- Per grid size and level: the ranked rate (rule.condition's rule.window rule.metric) and the
-- three criteria on point estimates: (a) above rule.above's rate at the same level, (b) at least
-- rule.sustained_ratio x the rate in rule.sustained_window, (c) rule.floor_metric above
-- rule.floor_condition's. chosen: per grid, the highest rate among levels passing (a)-(c), or the
-- highest rate of all when none passes. final: every level of the grid has rule.seeds seeds.
-- Inputs: study_cells (queries/study/cells.sql), study_decision_rule (one row, from the study file),
-- study_levels (grid_size, level: every planned level, so a level with no finished run counts).
with
rule as (
    select * from study_decision_rule
),
pick as (
    select c.grid_size, c.level, c.condition, c.metric, c.win, c.mean, c.n_seeds
    from study_cells as c
),
levels as (
    select
        l.grid_size, l.level, coalesce(r.n_seeds, 0) as n_seeds, r.mean as rate,
        a.mean as above_rate, s.mean as sustained_ref, f.mean as floor_value, g.mean as floor_ref,
        rule.sustained_ratio, rule.seeds
    from study_levels as l
    cross join rule
    left join pick as r
        on r.grid_size = l.grid_size and r.level = l.level and r.condition = rule.condition
        and r.metric = rule.metric and r.win = rule.window
    left join pick as a
        on a.grid_size = l.grid_size and a.level = l.level and a.condition = rule.above
        and a.metric = rule.metric and a.win = rule.window
    left join pick as s
        on s.grid_size = l.grid_size and s.level = l.level and s.condition = rule.condition
        and s.metric = rule.metric and s.win = rule.sustained_window
    left join pick as f
        on f.grid_size = l.grid_size and f.level = l.level and f.condition = rule.condition
        and f.metric = rule.floor_metric and f.win = rule.window
    left join pick as g
        on g.grid_size = l.grid_size and g.level = l.level and g.condition = rule.floor_condition
        and g.metric = rule.floor_metric and g.win = rule.window
),
judged as (
    select
        *,
        rate > above_rate as above_ok,
        rate >= sustained_ratio * sustained_ref as sustained_ok,
        floor_value > floor_ref as floor_ok
    from levels
),
ranked as (
    select
        *,
        coalesce(above_ok and sustained_ok and floor_ok, false) as passes,
        bool_and(n_seeds >= seeds) over (partition by grid_size) as final
    from judged
)
select
    grid_size, level, n_seeds, rate, above_rate, sustained_ref, floor_value, floor_ref,
    above_ok, sustained_ok, floor_ok, passes,
    row_number() over (partition by grid_size order by passes desc, rate desc nulls last, level) = 1 as chosen,
    final
from ranked
order by grid_size, rate desc nulls last, level
