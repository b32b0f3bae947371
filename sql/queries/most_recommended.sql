-- The items recommended to the most users, against how often they were interacted with.
with counts as (
    select
        item_id,
        count(*) as num_users,
        avg(rank) as mean_rank
    from recommendations
    group by item_id
),

final as (
    select
        counts.item_id,
        items.title,
        counts.num_users,
        round(counts.num_users / (select count(distinct user_id) from recommendations), 4) as share_of_users,
        round(counts.mean_rank, 2) as mean_rank,
        items.num_interactions
    from counts
    left join items using (item_id)
    order by counts.num_users desc, counts.item_id
    limit 20
)

select * from final
