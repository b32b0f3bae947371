-- Which path produced users' lists: the model (users with interactions), their features
-- (cold users, FM/DeepFM) or the popularity fallback.
with per_user as (
    select
        user_id,
        any_value(source) as source
    from recommendations
    group by user_id
),

final as (
    select
        source,
        count(*) as num_users,
        round(count(*) / sum(count(*)) over (), 4) as share_of_users
    from per_user
    group by source
    order by num_users desc, source
)

select * from final
