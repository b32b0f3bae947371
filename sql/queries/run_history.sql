-- Every recorded run, newest first, with the served model's validation NDCG@10.
with runs_ as (
    select
        run_id,
        started_at,
        finished_at,
        status,
        model,
        num_users,
        num_items,
        num_rows,
        message
    from runs
),

ndcg as (
    select
        run_id,
        model,
        value as ndcg_at_10
    from metrics
    where split = 'validation' and metric = 'ndcg' and k = 10
),

final as (
    select
        runs_.*,
        ndcg.ndcg_at_10
    from runs_
    left join ndcg using (run_id, model)
    order by runs_.run_id desc
)

select * from final
