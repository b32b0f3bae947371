-- Each user's top-N unseen items; rank 1 is best. Sorted by user_id, rank.
-- user_key and item_key are the source's ID types (BIGINT or VARCHAR), created per run.
create type if not exists list_source as enum ('model', 'features', 'popularity');
create table if not exists recommendations (
    user_id user_key not null,
    rank integer not null,
    item_id item_key not null,
    score float not null,
    -- which path produced the user's list: model, features or popularity
    source list_source not null,
    -- the run's id, held once in the schema instead of in every row: {run_id} is filled in
    -- when the run's database is created (writing it per row cost as much as the scores)
    run_id varchar generated always as ('{run_id}') virtual
);
