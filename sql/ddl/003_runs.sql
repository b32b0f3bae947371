-- Every run the job has recorded (the ledger as of this database's publish).
create table if not exists runs (
    run_id varchar not null,
    started_at timestamptz,
    finished_at timestamptz,
    status varchar not null,  -- running, published, failed, abandoned
    model varchar,
    params varchar,  -- JSON: the served model's hyper-parameters
    source varchar,
    num_users bigint,
    num_items bigint,
    num_interactions bigint,
    num_rows bigint,
    code_version varchar,
    seed bigint,
    message varchar,  -- why a run failed, or what it chose
    timings varchar,  -- JSON: seconds per phase
    force_publish varchar  -- the reason given to --force-publish; NULL when not given
);
