-- Validation metrics of every candidate model of every published run.
create table if not exists metrics (
    run_id varchar not null,
    model varchar not null,
    split varchar not null,  -- validation (temporal holdout)
    metric varchar not null,  -- ndcg, recall, precision, map, hitrate, coverage, rmse, mae, auc, logloss
    k integer,  -- NULL for rating metrics
    value double not null
);
