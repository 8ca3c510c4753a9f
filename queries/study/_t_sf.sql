-- (macro) t_sf(x, nu): P(T > x) for Student's t with nu degrees of freedom, nu floored and clamped to [1, 200]
-- The exact finite series for integer nu (Abramowitz & Stegun 26.7.3-4), theta = atan(|x| / sqrt(nu)):
-- A = P(|T| < |x|) = sin(theta) * sum_{k < nu/2} c_k cos^(2k) theta                         (nu even)
--   = 2/pi * (theta + sin(theta) * sum_{k < (nu-1)/2} d_k cos^(2k+1) theta)                (nu odd)
-- with c_k = prod_{j<=k} (2j-1)/(2j), d_k = prod_{j<=k} (2j)/(2j+1). Clamping at 200 makes
-- p-values slightly conservative for larger df. Fractional (Welch) df are floored, as in ablation.sql.
create or replace macro t_sf(x, nu) as (
    with
    p as (
        select
            least(greatest(floor(nu), 1), 200)::int as v,
            atan(abs(x) / sqrt(least(greatest(floor(nu), 1), 200))) as th
    ),
    k as (
        select
            p.v,
            p.th,
            r.k,
            case when p.v % 2 = 0 then (2 * r.k - 1)::double / (2 * r.k)
                else (2 * r.k)::double / (2 * r.k + 1) end as ratio
        from p, range(0, greatest(1, p.v // 2)) as r(k)
    ),
    terms as (
        select
            v,
            th,
            case when v = 1 then 0.0
                else exp(sum(case when k = 0 then 0.0 else ln(ratio) end)
                    over (order by k rows unbounded preceding))
                    * power(cos(th), case when v % 2 = 0 then 2 * k else 2 * k + 1 end)
            end as term
        from k
    ),
    a as (
        select
            case when any_value(v) % 2 = 0 then sin(any_value(th)) * sum(term)
                else 2 / pi() * (any_value(th) + sin(any_value(th)) * sum(term)) end as a
        from terms
    )
    select case when x >= 0 then (1 - a) / 2 else (1 + a) / 2 end from a
)
