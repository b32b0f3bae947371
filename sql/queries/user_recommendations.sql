-- One user's list with item metadata. Set the user first:
--   set variable user_id = 42;
with recs as (
    select
        user_id,
        rank,
        item_id,
        score,
        source
    from recommendations
    where user_id = getvariable('user_id')
),

final as (
    select
        recs.rank,
        recs.item_id,
        items.title,
        items.genres,
        recs.score,
        recs.source
    from recs
    left join items using (item_id)
    order by recs.rank
)

select * from final
