-- who played whom, written twice: an evaluation run's agent with more than one eval_agents row
-- (the table is written once, when the run starts; a second copy makes every evaluation join count it twice)
select format('duplicates: eval_agents of run {}: {} agent row(s) written more than once ({})',
              run_id, sum(n - 1)::bigint, string_agg(agent, ', ' order by agent)) as problem
from (select run_id, agent, count(*) as n from eval_agents group by run_id, agent having count(*) > 1)
group by run_id order by run_id
