-- Each user's top-N unseen items; rank 1 is best. Sorted by user_id, rank.
-- user_key and item_key are the source's ID types (BIGINT or VARCHAR), created per run.
create table if not exists recommendations (
    user_id user_key not null,
    rank integer not null,
    item_id item_key not null,
    score float not null,
    -- which path produced the user's list: model, features or popularity
    source varchar not null,
    run_id varchar not null
);
