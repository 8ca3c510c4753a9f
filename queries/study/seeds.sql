-- per seed: each (cell, seed)'s value of every metric in the late window, the values behind
-- cells.sql's means over seeds (a `karmic study table NAME --seeds` table).
-- From study_seed_values (queries/study/_seed_values.sql).
select grid_size, level, condition, seed, metric, value
from study_seed_values
where win = 'late'
order by grid_size desc, level, condition, seed, metric
