-- "Because you liked X": items similar to a user's latest interactions that the user has not
-- had, each with the liked item it comes from. Set the user first:
--   set variable user_id = 42;
with liked as (
    select
        item_id,
        recency
    from user_history
    where user_id = getvariable('user_id') and recency <= 5
),

seen as (
    select item_id
    from user_history
    where user_id = getvariable('user_id')
),

candidates as (
    select
        similar_items.similar_item_id as item_id,
        liked.item_id as because_of,
        similar_items.score,
        row_number() over (
            partition by similar_items.similar_item_id
            order by similar_items.score desc, liked.recency
        ) as pick
    from liked
    join similar_items using (item_id)
    where similar_items.similar_item_id not in (select item_id from seen)
),

final as (
    select
        candidates.item_id,
        items.title,
        candidates.because_of,
        liked_items.title as because_of_title,
        round(candidates.score, 4) as similarity
    from candidates
    left join items using (item_id)
    left join items as liked_items on liked_items.item_id = candidates.because_of
    where candidates.pick = 1
    order by candidates.score desc, candidates.item_id
    limit 10
)

select * from final
