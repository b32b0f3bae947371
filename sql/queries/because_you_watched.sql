-- One user's list with item metadata and, for each item, the most similar item the user
-- already has ("because you watched ..."): the best-ranked of the recommended item's
-- similar_items that is among the user's user_history (NULL when none of them is). Set the user:
--   set variable user_id = 42;
with recs as (
    select
        rank,
        item_id,
        score,
        source
    from recommendations
    where user_id = getvariable('user_id')
),

has as (
    select item_id
    from user_history
    where user_id = getvariable('user_id')
),

reasons as (
    select
        similar_items.item_id,
        similar_items.similar_item_id as because_item_id,
        similar_items.score as because_score,
        row_number() over (
            partition by similar_items.item_id order by similar_items.rank
        ) as pick
    from similar_items
    join recs on recs.item_id = similar_items.item_id
    join has on has.item_id = similar_items.similar_item_id
),

final as (
    select
        recs.rank,
        recs.item_id,
        items.title,
        items.genres,
        recs.score,
        recs.source,
        reasons.because_item_id,
        because.title as because_title,
        reasons.because_score
    from recs
    left join items on items.item_id = recs.item_id
    left join reasons on reasons.item_id = recs.item_id and reasons.pick = 1
    left join items as because on because.item_id = reasons.because_item_id
    order by recs.rank
)

select * from final
