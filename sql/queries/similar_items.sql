-- One item's most similar items with their metadata. Set the item first:
--   set variable item_id = 50;
with neighbours as (
    select
        rank,
        similar_item_id,
        score
    from similar_items
    where item_id = getvariable('item_id')
),

final as (
    select
        neighbours.rank,
        neighbours.similar_item_id,
        items.title,
        items.genres,
        neighbours.score
    from neighbours
    left join items on items.item_id = neighbours.similar_item_id
    order by neighbours.rank
)

select * from final
