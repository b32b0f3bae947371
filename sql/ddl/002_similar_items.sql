-- Each item's most similar items (cosine of the model's item vectors), the item itself excluded.
create table if not exists similar_items (
    item_id item_key not null,
    rank integer not null,
    similar_item_id item_key not null,
    score float not null,
    -- the run's id, held once in the schema instead of in every row: {run_id} is filled in
    -- when the run's database is created (writing it per row cost as much as the scores)
    run_id varchar generated always as ('{run_id}') virtual
);
