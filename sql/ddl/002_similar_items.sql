-- Each item's most similar items (cosine of the model's item vectors), the item itself excluded.
create table if not exists similar_items (
    item_id item_key not null,
    rank integer not null,
    similar_item_id item_key not null,
    score float not null,
    run_id varchar not null
);
