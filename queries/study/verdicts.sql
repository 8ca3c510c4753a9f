-- one verdict per prediction of a study: estimate, 95% CI, p-values, Holm-adjusted, supported | contradicted | inconclusive
-- Inputs: study_seed_values (per-seed values), study_eval_values (per-seed values of the study's
-- evaluations) and study_predictions (the study file's predictions: id, claim, source, metric,
-- test, margin, margin_abs, a_/b_ condition, grid_size, level, window, evaluation, and b_value: a
-- constant side b, compared by a one-sample test over a's seeds, df = n_a - 1).
-- source = 'training' reads a side's cell and window from study_seed_values; source =
-- 'evaluation' reads a side's evaluation (its focal agents, at the side's grid size and level)
-- from study_eval_values, with a_/b_condition the evaluation's focal condition and no window.
-- Both kinds are one family: the tests, the CI and Holm's correction below treat them alike.
-- diff = mean(a) - mean(b). Sides of one cell (only the window differs; for evaluations, one
-- focal condition's policies in two evaluations) are paired by seed:
-- diff and se from the per-seed differences, df = n - 1; otherwise Welch: se = sqrt(sd_a^2/n_a +
-- sd_b^2/n_b), Welch-Satterthwaite df (floored). 95% CI = diff +- t(0.975, df) se (view t975).
-- margin m (equivalent, not_less, not_greater) = margin * |mean(b)|, or margin_abs.
-- Each prediction has a support test and a contradiction test, both two-sided-scale p-values
-- (p = 2 P(T > x), t_sf from queries/study/_t_sf.sql), so p < 0.05 <=> the matching 95% CI bound:
--   greater:    support diff > 0                    contradiction diff < 0
--   less:       support diff < 0                    contradiction diff > 0
--   equivalent: support -m < diff < m (TOST)        contradiction |diff| > m
--   not_less:   support diff > -m                   contradiction diff < -m
--   not_greater: support diff < m                   contradiction diff > m
-- Holm's step-down correction runs over the study's predictions, separately for the support and
-- the contradiction p-values. Verdict: supported when the Holm-adjusted support p < alpha (0.05,
-- `set variable alpha`) and the unadjusted 95% CI says so too; contradicted when the
-- Holm-adjusted contradiction p < alpha and the CI says so; else inconclusive. A side with
-- fewer than 2 seeds (or a ratio with no hits) leaves the prediction inconclusive, with a note.
with
params as (
    select coalesce(try_cast(getvariable('alpha') as double), 0.05) as alpha
),

sides as (
    select
        p.*,
        coalesce(p.a_condition = p.b_condition and p.a_grid_size = p.b_grid_size and p.a_level = p.b_level,
            false) as paired,
        p.b_value is not null as constant
    from study_predictions as p
),

side_a as (
    select s.id, v.seed, v.value
    from sides as s
    join study_seed_values as v
        on s.source = 'training' and v.metric = s.metric and v.condition = s.a_condition
        and v.grid_size = s.a_grid_size and v.level = s.a_level and v.win = s.a_window
    where v.value is not null
    union all
    select s.id, v.seed, v.value
    from sides as s
    join study_eval_values as v
        on s.source = 'evaluation' and v.metric = s.metric and v.evaluation = s.a_evaluation
        and v.grid_size = s.a_grid_size and v.level = s.a_level
    where v.value is not null
),

side_b as (
    select s.id, v.seed, v.value
    from sides as s
    join study_seed_values as v
        on s.source = 'training' and v.metric = s.metric and v.condition = s.b_condition
        and v.grid_size = s.b_grid_size and v.level = s.b_level and v.win = s.b_window
    where v.value is not null
    union all
    select s.id, v.seed, v.value
    from sides as s
    join study_eval_values as v
        on s.source = 'evaluation' and v.metric = s.metric and v.evaluation = s.b_evaluation
        and v.grid_size = s.b_grid_size and v.level = s.b_level
    where v.value is not null
),

stats_a as (
    select id, count(*) as n_a, avg(value) as mean_a, stddev_samp(value) as sd_a from side_a group by id
),

stats_b as (
    select id, count(*) as n_b, avg(value) as mean_b, stddev_samp(value) as sd_b from side_b group by id
),

pairs as (
    select a.id, count(*) as n_pairs, avg(a.value - b.value) as diff_paired,
        stddev_samp(a.value - b.value) as sd_paired
    from side_a as a
    join side_b as b on b.id = a.id and b.seed = a.seed
    group by a.id
),

est as (
    select
        s.id, s.claim, s.source, s.metric, s.test, s.paired, s.margin, s.margin_abs,
        s.a_condition, s.a_grid_size, s.a_level, s.a_window, s.a_evaluation,
        s.b_condition, s.b_grid_size, s.b_level, s.b_window, s.b_evaluation, s.b_value,
        s.constant,
        a.n_a, a.mean_a, a.sd_a,
        case when s.constant then null else b.n_b end as n_b,
        case when s.constant then s.b_value else b.mean_b end as mean_b,
        case when s.constant then 0.0 else b.sd_b end as sd_b,
        pr.n_pairs,
        case
            when s.constant then a.mean_a - s.b_value
            when s.paired then pr.diff_paired
            else a.mean_a - b.mean_b
        end as diff,
        case
            when s.constant then case when a.n_a >= 2 then a.sd_a / sqrt(a.n_a) end
            when s.paired then case when pr.n_pairs >= 2 then pr.sd_paired / sqrt(pr.n_pairs) end
            when a.n_a >= 2 and b.n_b >= 2 then sqrt(a.sd_a ^ 2 / a.n_a + b.sd_b ^ 2 / b.n_b)
        end as se,
        case
            when s.constant then case when a.n_a >= 2 then a.n_a - 1 end
            when s.paired then case when pr.n_pairs >= 2 then pr.n_pairs - 1 end
            when a.n_a >= 2 and b.n_b >= 2 and a.sd_a ^ 2 / a.n_a + b.sd_b ^ 2 / b.n_b > 0
                then floor((a.sd_a ^ 2 / a.n_a + b.sd_b ^ 2 / b.n_b) ^ 2 / (
                    case when a.sd_a > 0 then (a.sd_a ^ 2 / a.n_a) ^ 2 / (a.n_a - 1) else 0 end
                    + case when b.sd_b > 0 then (b.sd_b ^ 2 / b.n_b) ^ 2 / (b.n_b - 1) else 0 end))
            when a.n_a >= 2 and b.n_b >= 2 then a.n_a + b.n_b - 2
        end as df,
        case
            when s.margin is not null then s.margin * abs(case when s.constant then s.b_value else b.mean_b end)
            else s.margin_abs
        end as m
    from sides as s
    left join stats_a as a on a.id = s.id
    left join stats_b as b on b.id = s.id
    left join pairs as pr on pr.id = s.id
),

ci as (
    select
        e.*,
        e.diff - t.t * e.se as ci_low,
        e.diff + t.t * e.se as ci_high
    from est as e
    left join t975 as t on greatest(e.df, 1) >= t.lo and greatest(e.df, 1) < t.hi
),

-- the statistic of each test as (numerator, se): x = numerator / se; se = 0 means an exact
-- difference at this sample, so the p-value is 0 or 1 by the numerator's sign
tests as (
    select
        c.*,
        case c.test
            when 'greater' then c.diff
            when 'less' then -c.diff
            when 'not_less' then c.diff + c.m
            when 'not_greater' then c.m - c.diff
        end as sup_num,
        case c.test
            when 'greater' then -c.diff
            when 'less' then c.diff
            when 'not_less' then -(c.diff + c.m)
            when 'not_greater' then c.diff - c.m
            when 'equivalent' then abs(c.diff) - c.m
        end as con_num
    from ci as c
),

pvals as (
    select
        t.*,
        case
            when t.se is null or t.diff is null then null
            when t.test = 'equivalent' then least(1.0, 2 * greatest(
                case when t.se = 0 then (case when t.diff + t.m > 0 then 0.0 else 1.0 end)
                    else t_sf((t.diff + t.m) / t.se, t.df) end,
                case when t.se = 0 then (case when t.m - t.diff > 0 then 0.0 else 1.0 end)
                    else t_sf((t.m - t.diff) / t.se, t.df) end))
            when t.se = 0 then case when t.sup_num > 0 then 0.0 else 1.0 end
            else least(1.0, 2 * t_sf(t.sup_num / t.se, t.df))
        end as p_support,
        case
            when t.se is null or t.diff is null then null
            when t.se = 0 then case when t.con_num > 0 then 0.0 else 1.0 end
            else least(1.0, 2 * t_sf(t.con_num / t.se, t.df))
        end as p_contra
    from tests as t
),

-- Holm: the i-th smallest p-value is scaled by (m - i + 1), capped at 1, then made monotone (a
-- running maximum), so no adjusted p is below one ranked before it. m is every prediction of the
-- study, with or without a p-value: one whose cells are missing (an interim report) or have too
-- few seeds keeps its share of alpha, so a partial study is never judged more leniently than
-- the complete one
ranked_s as (
    select
        id,
        least(1.0, ((select count(*) from pvals) - row_number() over (order by p_support, id) + 1) * p_support) as scaled,
        row_number() over (order by p_support, id) as i
    from pvals
    where p_support is not null
),

holm_s as (
    select id, max(scaled) over (order by i rows unbounded preceding) as p_support_holm from ranked_s
),

ranked_c as (
    select
        id,
        least(1.0, ((select count(*) from pvals) - row_number() over (order by p_contra, id) + 1) * p_contra) as scaled,
        row_number() over (order by p_contra, id) as i
    from pvals
    where p_contra is not null
),

holm_c as (
    select id, max(scaled) over (order by i rows unbounded preceding) as p_contra_holm from ranked_c
),

judged as (
    select
        p.*,
        hs.p_support_holm,
        hc.p_contra_holm,
        case p.test
            when 'greater' then p.ci_low > 0
            when 'less' then p.ci_high < 0
            when 'equivalent' then p.ci_low > -p.m and p.ci_high < p.m
            when 'not_less' then p.ci_low > -p.m
            when 'not_greater' then p.ci_high < p.m
        end as ci_supports,
        case p.test
            when 'greater' then p.ci_high < 0
            when 'less' then p.ci_low > 0
            when 'equivalent' then p.ci_low > p.m or p.ci_high < -p.m
            when 'not_less' then p.ci_high < -p.m
            when 'not_greater' then p.ci_low > p.m
        end as ci_contradicts
    from pvals as p
    left join holm_s as hs on hs.id = p.id
    left join holm_c as hc on hc.id = p.id
)

select
    j.id,
    j.claim,
    j.metric,
    j.test,
    j.a_condition, j.a_grid_size, j.a_level, j.a_window,
    j.b_condition, j.b_grid_size, j.b_level, j.b_window, j.b_value,
    -- (added for evaluation predictions; pipelines.study_report drops them from training ones)
    j.source, j.a_evaluation, j.b_evaluation,
    j.paired,
    j.n_a, j.mean_a, j.sd_a, j.n_b, j.mean_b, j.sd_b,
    j.diff, j.se, j.df, j.ci_low, j.ci_high, j.m as margin,
    j.p_support, j.p_support_holm, j.p_contra, j.p_contra_holm,
    case
        when j.se is null then 'inconclusive'
        when j.p_support_holm < params.alpha and j.ci_supports then 'supported'
        when j.p_contra_holm < params.alpha and j.ci_contradicts then 'contradicted'
        else 'inconclusive'
    end as verdict,
    case
        when j.n_a is null or (j.n_b is null and not j.constant) then 'no data on one side'
        when j.se is null then 'fewer than 2 seeds with a value on a side'
        when j.ci_supports and not j.p_support_holm < params.alpha then 'the unadjusted CI supports it; Holm does not'
        when j.ci_contradicts and not j.p_contra_holm < params.alpha then 'the unadjusted CI contradicts it; Holm does not'
    end as note
from judged as j, params
order by j.id
