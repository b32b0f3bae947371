-- How much of the catalogue is recommended, and how popular the recommended items are.
with catalogue as (
    select
        item_id,
        num_interactions,
        ntile(10) over (order by num_interactions desc) as popularity_decile
    from items
),

recommended as (
    select
        catalogue.popularity_decile,
        count(*) as num_rows,
        count(distinct recommendations.item_id) as num_items
    from recommendations
    join catalogue using (item_id)
    group by catalogue.popularity_decile
),

final as (
    select
        popularity_decile,  -- 1 = the most popular tenth of the catalogue
        num_items,
        num_rows,
        round(num_rows / sum(num_rows) over (), 4) as share_of_rows,
        round(
            (select count(distinct item_id) from recommendations) / (select count(*) from items), 4
        ) as catalogue_coverage
    from recommended
    order by popularity_decile
)

select * from final
