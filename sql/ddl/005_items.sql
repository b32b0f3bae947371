-- The catalogue as of this run, with metadata when an item feature table is configured.
create table if not exists items (
    item_id item_key not null,
    title varchar,
    genres varchar,
    num_interactions bigint not null
);
