"""`recsys show user USER_ID` and `recsys show item ITEM_ID`: look-ups on the served file."""

from __future__ import annotations

import click

from jobs.common import build_config, config_option, database_option, handle_errors

# Widest a text cell is printed in the table view (--tsv prints every value whole).
MAX_WIDTH = 40


@click.group("show")
def show_group() -> None:
    """Look up one user's list or one item's neighbours in the served file (read-only: works
    while a run is publishing)."""


def tsv_option(f):
    return click.option("--tsv", is_flag=True,
                        help="Tab-separated rows with a header, values whole (for scripts).")(f)  # fmt: skip


@show_group.command("user")
@click.argument("user_id")
@config_option
@database_option
@tsv_option
@handle_errors
def show_user(user_id, config_path, database, tsv) -> None:
    """USER_ID's list: rank, item, title, genres, score, path, and the most similar item the
    user already has ("because you watched ...")."""
    from recsys.lookup import user_list  # duckdb only: no torch, so it starts fast

    config = build_config(config_path, {"output.database": database})
    echo_listing(user_list(config.output.database, user_id), tsv)


@show_group.command("item")
@click.argument("item_id")
@config_option
@database_option
@tsv_option
@handle_errors
def show_item(item_id, config_path, database, tsv) -> None:
    """ITEM_ID's most similar items, with title and genres."""
    from recsys.lookup import similar_items

    config = build_config(config_path, {"output.database": database})
    echo_listing(similar_items(config.output.database, item_id), tsv)


def echo_listing(listing, tsv: bool) -> None:
    if tsv:
        click.echo("\t".join(listing.columns))
        for row in listing.rows:
            click.echo("\t".join(cell(v) for v in row))
        return
    click.echo(listing.title)
    for note in listing.notes:
        click.echo(f"({note})")
    if not listing.rows:
        return
    columns, rows = listing.columns, [[cell(v, MAX_WIDTH) for v in row] for row in listing.rows]
    numeric = [
        all(isinstance(r[i], int | float) for r in listing.rows if r[i] is not None)
        for i in range(len(columns))
    ]
    if "because_item_id" in columns:  # one readable column instead of three
        at = columns.index("because_item_id")
        columns, numeric = [*columns[:at], "because you watched"], [*numeric[:at], False]
        rows = [
            [*row[:at], because(*listing_row[at : at + 3])]
            for row, listing_row in zip(rows, listing.rows, strict=True)
        ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    click.echo(line(columns))
    for row in rows:
        click.echo(line(row))


def cell(value, width: int = 0) -> str:
    if value is None:
        return ""
    text = f"{value:.4f}" if isinstance(value, float) else str(value)
    return text if not width or len(text) <= width else text[: width - 1] + "…"


def because(item_id, title, score) -> str:
    if item_id is None:
        return ""
    return f"{cell(title, MAX_WIDTH)} ({item_id})" if title else str(item_id)
