-- retribution ratio (retribution hits / all hits) against global_step per condition, grid size and seed, shown only where a bin has at least min_hits hits
-- Episodes are binned by global_step as in aggression_curve.sql (n_bins, default 20). Rows with a
-- seed: that seed's hits pooled over the bin's episodes (runs repeating a seed pooled too): hits,
-- retribution_hits and retribution_ratio = retribution_hits / hits, null when hits < min_hits
-- (`set variable min_hits = 50`; default karmic.definitions.MIN_HITS = 20): a ratio of a handful of hits jumps between 0 and 1
-- by chance. n = episodes. Rows with seed null: hits summed over seeds; retribution_ratio = mean
-- of the seeds' shown ratios (n = those seeds), 95% CI mean +- t(0.975, n - 1) * sd / sqrt(n);
-- null when no seed reaches min_hits. Hits are classified by the ledger rule (view ledger_hits).
with
params as (
    select
        case
            when b is null then 20
            when b >= 1 then b
            else error('n_bins must be a positive integer')
        end as n_bins,
        case
            when m is null then coalesce(try_cast(getvariable('default_min_hits') as bigint), 20)
            when m >= 1 then m
            else error('min_hits must be a positive integer')
        end as min_hits
    from (
        select
            try_cast(getvariable('n_bins') as bigint) as b,
            try_cast(getvariable('min_hits') as bigint) as m
    )
),
tq as (
    select lo, hi, t from t975  -- queries/_t975.sql
),
hit_counts as (
    select
        run_id,
        episode,
        count(*) as hits,
        count(*) filter (where retribution) as retribution_hits
    from ledger_hits
    group by run_id, episode
),
ep as (
    select run_id, episode, condition, grid_size, seed, global_step from episode_totals
),
widths as (
    select grid_size, greatest(1, ceil((max(global_step) + 1) / params.n_bins))::bigint as width
    from ep, params
    group by grid_size, params.n_bins
),
per_seed as (
    select
        ep.condition,
        ep.grid_size,
        ep.seed,
        ep.global_step // widths.width as bin,
        any_value(widths.width) as width,
        count(*) as episodes,
        coalesce(sum(hc.hits), 0)::bigint as hits,
        coalesce(sum(hc.retribution_hits), 0)::bigint as retribution_hits
    from ep
    join widths using (grid_size)
    left join hit_counts as hc using (run_id, episode)
    group by ep.condition, ep.grid_size, ep.seed, ep.global_step // widths.width
),
shown as (
    select
        per_seed.*,
        params.min_hits,
        case when hits >= params.min_hits then retribution_hits::double / hits end
            as retribution_ratio
    from per_seed, params
),
over_seeds as (
    select
        condition,
        grid_size,
        bin,
        any_value(width) as width,
        any_value(min_hits) as min_hits,
        count(retribution_ratio) as n,
        sum(hits)::bigint as hits,
        sum(retribution_hits)::bigint as retribution_hits,
        avg(retribution_ratio) as retribution_ratio,
        stddev_samp(retribution_ratio) as sd
    from shown
    group by condition, grid_size, bin
)
select
    condition, grid_size, seed, bin, (bin + 0.5) * width as step, episodes as n, hits,
    retribution_hits, min_hits, retribution_ratio,
    null::double as sd, null::double as ci_low, null::double as ci_high
from shown
union all
select
    o.condition, o.grid_size, null, o.bin, (o.bin + 0.5) * o.width, o.n, o.hits,
    o.retribution_hits, o.min_hits, o.retribution_ratio, o.sd,
    o.retribution_ratio - tq.t * o.sd / sqrt(o.n), o.retribution_ratio + tq.t * o.sd / sqrt(o.n)
from over_seeds as o
left join tq on o.n - 1 >= tq.lo and o.n - 1 < tq.hi
order by grid_size, condition, seed nulls first, bin
