-- The run whose lists a published file holds ('' when it holds none). This is the one
-- definition of "the served run" for a file: the report, the lookups and the publisher read it.
select coalesce(min(run_id), '') as run_id
from recommendations;
