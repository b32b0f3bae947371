-- The items each user already has: the training interactions scoring excluded (one row per
-- distinct pair). For "because you watched" look-ups; output.user_items = false leaves it empty.
create table if not exists user_items (
    user_id user_key not null,
    item_id item_key not null,
    run_id varchar not null
);
