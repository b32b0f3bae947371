-- Each user's latest interactions as the model saw them (for "because you liked" lists).
create table if not exists user_history (
    user_id user_key not null,
    item_id item_key not null,
    timestamp bigint,  -- Unix seconds (file order when the source has no timestamps)
    recency integer not null  -- 1 = the user's latest interaction
);
