-- Validation NDCG@k of every candidate model by user activity: users bucketed by how many
-- training interactions they have (min_history..max_history; max_history NULL = no bound).
create table if not exists metrics_by_activity (
    run_id varchar not null,
    model varchar not null,
    split varchar not null,  -- validation (temporal holdout)
    k integer not null,
    bucket varchar not null,  -- e.g. 5-9, 500+
    min_history bigint not null,
    max_history bigint,
    num_users bigint not null,
    ndcg double not null
);
