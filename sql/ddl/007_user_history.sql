-- Each user's interactions as the model saw them (its latest output.history_n; 0 = all): what
-- scoring excluded, and what "because you liked / watched" look-ups start from.
create table if not exists user_history (
    user_id user_key not null,
    item_id item_key not null,
    timestamp bigint,  -- Unix seconds (file order when the source has no timestamps)
    recency integer not null,  -- 1 = the user's latest interaction
    -- the run's id, held once in the schema instead of in every row: {run_id} is filled in
    -- when the run's database is created (writing it per row cost as much as the scores)
    run_id varchar generated always as ('{run_id}') virtual
);
