"""The run report: one self-contained HTML file (charts as inline SVG images) that shows what a
published run did, read from the served database's tables; nothing is recomputed here."""

from __future__ import annotations

import base64
import contextlib
import html
import io
import itertools
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl

from recsys.config import OutputConfig
from recsys.errors import NotFoundError
from recsys.metrics import LOWER_IS_BETTER, RANKING_METRICS, RATING_METRICS
from recsys.redact import redact
from recsys.state import StatePaths, state_paths
from recsys.store.served import served_run_id
from recsys.version import code_version
from recsys.warehouse import QUERIES_DIR, Warehouse, has_table, open_read_only

log = logging.getLogger(__name__)

HISTORY_RUNS = 30  # published runs in the metric history
RECENT_RUNS = 10  # runs of any status in the run list
SCORE_BINS = 40
LONG_TAIL_POINTS = 200  # points of the cumulative popularity curve
# Metrics in the order tables and charts list them (then any others, alphabetically).
METRIC_ORDER = {m: i for i, m in enumerate((*RANKING_METRICS, *RATING_METRICS))}
# Rows of the metrics table that are timings, not quality: shown apart, never charted as quality.
TIMING_METRICS = ("train_seconds",)
# Activity buckets with fewer users than this are marked as too small to read.
MIN_BUCKET_USERS = 30

WINNER = "#2563eb"
OTHERS = ("#f59e0b", "#10b981", "#a855f7", "#ef4444", "#64748b", "#0ea5e9", "#84cc16")
CATALOGUE = "#9ca3af"
# Figure widths in inches for a full-width and a half-width chart: SVGs are shown at their own
# size (96 px an inch) so that text is the same size in every chart.
FULL, HALF = 11.3, 5.5


# ----------------------------------------------------------------------------- queries
# Every number in the report comes from one of these (or the shipped sql/queries files).


def shipped_query(name: str) -> str:
    """One of the example queries in sql/queries, as downstream users run it."""
    return (QUERIES_DIR / f"{name}.sql").read_text()


RUN_SQL = "select * from runs where run_id = ?"

RECENT_RUNS_SQL = """
select run_id, status, model, num_rows, message
from runs
where run_id <= ?
order by run_id desc
limit ?
"""

CANDIDATES_SQL = """
select model, metric, k, value
from metrics
where run_id = ? and split = 'validation'
order by model, metric
"""

# The metrics of the model each published run served, for the last runs up to this one.
HISTORY_SQL = """
with published as (
    select
        run_id,
        model
    from runs
    where status = 'published' and run_id <= getvariable('report_run_id')
    order by run_id desc
    limit getvariable('report_history')
),

final as (
    select
        published.run_id,
        published.model,
        metrics.metric,
        metrics.k,
        metrics.value
    from published
    join metrics
        on metrics.run_id = published.run_id
        and metrics.model = published.model
        and metrics.split = 'validation'
    order by published.run_id, metrics.metric
)

select * from final
"""

SUMMARY_SQL = """
select
    (select count(*) from recommendations) as num_rows,
    (select count(distinct user_id) from recommendations) as num_users,
    (select count(distinct item_id) from recommendations) as num_recommended_items,
    (select count(*) from items) as num_items,
    (select count(distinct item_id) from recommendations)
        / greatest((select count(*) from items), 1) as catalogue_coverage
"""

# Share of interactions and of recommendation slots per popularity decile of the catalogue.
DECILES_SQL = """
with catalogue as (
    select
        item_id,
        num_interactions,
        ntile(10) over (order by num_interactions desc, item_id) as popularity_decile
    from items
),

recommended as (
    select
        item_id,
        count(*) as num_slots
    from recommendations
    group by item_id
),

final as (
    select
        catalogue.popularity_decile,
        count(*) as num_items,
        count(recommended.item_id) as num_items_recommended,
        sum(catalogue.num_interactions) / greatest(sum(sum(catalogue.num_interactions)) over (), 1)
            as share_of_interactions,
        coalesce(sum(recommended.num_slots), 0)
            / greatest(sum(sum(recommended.num_slots)) over (), 1) as share_of_recommendations
    from catalogue
    left join recommended using (item_id)
    group by catalogue.popularity_decile
    order by catalogue.popularity_decile
)

select * from final
"""

# Cumulative shares along the catalogue sorted by popularity, thinned to about N points.
LONG_TAIL_SQL = """
with recommended as (
    select
        item_id,
        count(*) as num_slots
    from recommendations
    group by item_id
),

ranked as (
    select
        row_number() over (order by items.num_interactions desc, items.item_id) as popularity_rank,
        count(*) over () as num_items,
        sum(items.num_interactions) over (order by items.num_interactions desc, items.item_id)
            / greatest(sum(items.num_interactions) over (), 1) as cumulative_interactions,
        sum(coalesce(recommended.num_slots, 0))
            over (order by items.num_interactions desc, items.item_id)
            / greatest(sum(coalesce(recommended.num_slots, 0)) over (), 1)
            as cumulative_recommendations
    from items
    left join recommended using (item_id)
),

final as (
    select
        popularity_rank / num_items as catalogue_share,
        cumulative_interactions,
        cumulative_recommendations
    from ranked
    where popularity_rank = num_items
        or popularity_rank % greatest(num_items // getvariable('report_points'), 1) = 0
    order by popularity_rank
)

select * from final
"""

LIST_LENGTHS_SQL = """
with per_user as (
    select
        user_id,
        count(*) as list_length
    from recommendations
    group by user_id
)

select
    list_length,
    count(*) as num_users
from per_user
group by list_length
order by list_length
"""

SCORES_SQL = """
with bounds as (
    select
        min(score) as low,
        max(score) as high
    from recommendations
),

binned as (
    select
        least(
            floor((score - bounds.low) / greatest(bounds.high - bounds.low, 1e-12)
                * getvariable('report_bins')),
            getvariable('report_bins') - 1
        ) as bin,
        bounds.low,
        bounds.high
    from recommendations, bounds
)

select
    bin,
    any_value(low) + bin * (any_value(high) - any_value(low)) / getvariable('report_bins')
        as bin_start,
    any_value(low) + (bin + 1) * (any_value(high) - any_value(low)) / getvariable('report_bins')
        as bin_end,
    count(*) as num_rows
from binned
group by bin
order by bin
"""

ACTIVITY_SQL = """
select model, k, bucket, min_history, max_history, num_users, ndcg
from metrics_by_activity
where run_id = ? and split = 'validation'
order by min_history, model
"""


@dataclass
class ReportData:
    """What the report shows, as read from one database file."""

    database: str
    run: dict[str, Any]
    selection: tuple[str, int | None]  # the metric that chose the model, e.g. ("ndcg", 10)
    recent_runs: pl.DataFrame
    candidates: pl.DataFrame
    history: pl.DataFrame
    # None when this file does not hold the run's recommendations (an older run).
    summary: dict[str, Any] | None = None
    deciles: pl.DataFrame | None = None
    long_tail: pl.DataFrame | None = None
    sources: pl.DataFrame | None = None
    list_lengths: pl.DataFrame | None = None
    scores: pl.DataFrame | None = None
    most_recommended: pl.DataFrame | None = None
    activity: pl.DataFrame | None = None  # None when the file has no metrics_by_activity
    notes: list[str] = field(default_factory=list)


def load_report_data(
    con: duckdb.DuckDBPyConnection,
    database: str,
    run_id: str,
    with_recommendations: bool,
    default_selection: tuple[str, int | None] = ("ndcg", 10),
) -> ReportData:
    """Read everything the report shows for `run_id` from an open database."""
    found = con.sql(RUN_SQL, params=[run_id]).pl()
    if not found.height:
        raise NotFoundError(f"run {run_id} is not in {database}'s runs table")
    run = found.row(0, named=True)
    con.execute("set variable report_run_id = ?", [run_id])
    con.execute("set variable report_history = ?", [HISTORY_RUNS])
    con.execute("set variable report_points = ?", [LONG_TAIL_POINTS])
    con.execute("set variable report_bins = ?", [SCORE_BINS])
    data = ReportData(
        database=database,
        run=run,
        selection=selection_of(run.get("message") or "", default_selection),
        recent_runs=con.sql(RECENT_RUNS_SQL, params=[run_id, RECENT_RUNS]).pl(),
        candidates=con.sql(CANDIDATES_SQL, params=[run_id]).pl(),
        history=con.sql(HISTORY_SQL).pl(),
    )
    if has_table(con, "metrics_by_activity"):
        data.activity = con.sql(ACTIVITY_SQL, params=[run_id]).pl()
    if with_recommendations:
        data.summary = con.sql(SUMMARY_SQL).pl().row(0, named=True)
        data.deciles = con.sql(DECILES_SQL).pl()
        data.long_tail = con.sql(LONG_TAIL_SQL).pl()
        data.sources = con.sql(shipped_query("share_by_path")).pl()
        data.list_lengths = con.sql(LIST_LENGTHS_SQL).pl()
        data.scores = con.sql(SCORES_SQL).pl()
        data.most_recommended = con.sql(shipped_query("most_recommended")).pl()
    return data


def selection_of(message: str, default: tuple[str, int | None]) -> tuple[str, int | None]:
    """The selection metric a run names in its message ("... chosen by validation ndcg@10 ...")."""
    match = re.search(r"by validation (\w+)(?:@(\d+))?", message)
    if not match:
        return default
    return match.group(1), int(match.group(2)) if match.group(2) else None


@contextlib.contextmanager
def open_for_run(database: Path, run_id: str | None) -> Iterator[tuple[Any, str, str, bool]]:
    """The file that holds `run_id`'s results (the served one, or its archived copy), opened
    read-only: yields (connection, path, run_id, whether it holds the run's recommendations)."""
    with open_read_only(database) as con:
        served = served_run_id(con)
        if run_id is None:
            if not served:
                raise NotFoundError(f"{database}: no published run to report on")
            run_id = served
        if run_id == served:
            yield con, str(database), run_id, True
            return
        known = con.execute("select count(*) from runs where run_id = ?", [run_id]).fetchall()
        if not known[0][0]:
            recent = [r[0] for r in con.sql(
                "select run_id from runs order by run_id desc limit 5").fetchall()]  # fmt: skip
            raise NotFoundError(
                f"run {run_id} is not in {database}'s runs table "
                f"(recent runs: {', '.join(recent) or 'none'}; `recsys runs` lists them)"
            )
    archived = state_paths(database).archived(run_id)
    if archived.exists():
        with open_read_only(archived) as con:
            yield con, str(archived), run_id, served_run_id(con) == run_id
        return
    with open_read_only(database) as con:  # the run's ledger and metrics, without its rows
        yield con, str(database), run_id, False


def build_report(
    database: str | Path,
    run_id: str | None = None,
    default_selection: tuple[str, int | None] = ("ndcg", 10),
) -> tuple[str, str]:
    """The HTML report of `run_id` (default: the served run) of the served `database`:
    (run_id, html)."""
    with open_for_run(Path(database), run_id) as (con, path, run_id, with_recs):
        data = load_report_data(con, path, run_id, with_recs, default_selection)
    data.run["timings"] = ledger_timings(Path(database), run_id) or data.run.get("timings")
    if not with_recs:
        data.notes.append(
            f"The recommendations of run {run_id} are no longer kept (it is neither served nor "
            f"archived), so the sections about them are empty."
        )
    return run_id, render_html(data)


def ledger_timings(database: Path, run_id: str) -> str | None:
    """The run's phase times as the ledger beside the served file has them (JSON), or None.
    A file's own runs row is written while it is being published, so only the ledger holds
    the publish phase's time."""
    run = Warehouse(database).ledger.get(run_id)
    timings = run.get("timings") if run and run.get("status") == "published" else None
    if isinstance(timings, str):
        return timings
    return json.dumps(timings) if isinstance(timings, dict) and timings else None


def write_report(
    database: str | Path,
    out: str | Path | None = None,
    run_id: str | None = None,
    default_selection: tuple[str, int | None] = ("ndcg", 10),
    folder: str | Path | None = None,
) -> tuple[Path, str]:
    """Write the report to `out` (default: `folder`/<name>.report-<run_id>.html, `folder`
    defaulting to the database's) atomically: a reader never sees half a file. Returns
    (path, run_id)."""
    database = Path(database)
    run_id, text = build_report(database, run_id, default_selection)
    out = (
        Path(out) if out else state_paths(database).report(Path(folder or database.parent), run_id)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out, run_id


def report_dir(output: OutputConfig, served: Path) -> Path:
    return Path(output.report_dir) if output.report_dir else served.parent


def publish_report(output: OutputConfig, served: Path, run_id: str) -> str:
    """After a publish: write `<name>.report-<run_id>.html`, point `<name>.report-latest.html`
    at it and prune this database's old reports. Never raises (the run is published already);
    returns the path, or ''."""
    folder = report_dir(output, served)
    paths = state_paths(served)
    try:
        path, _ = write_report(served, paths.report(folder, run_id), run_id)
        update_latest(path, paths.latest_report(folder))
        prune_reports(paths, folder, output.keep_reports)
        clear_stale_temporaries(paths, folder)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else ""
        log.warning("run report not written to %s (%s: %s); the run is published all the same",
                    folder, type(exc).__name__, reason)  # fmt: skip
        log.debug("run report failed", exc_info=True)
        return ""
    log.debug("run report: %s", path)  # the job prints it
    return str(path)


def update_latest(report: Path, latest: Path) -> None:
    """Make `latest` the same file as `report`: a hard link (a copy where links fail) swapped
    in atomically, so it outlives the pruning of `report`."""
    tmp = latest.with_name(f".{latest.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(report, tmp)
        except OSError:
            shutil.copyfile(report, tmp)
        os.replace(tmp, latest)
    finally:
        tmp.unlink(missing_ok=True)


def clear_stale_temporaries(paths: StatePaths, folder: Path, older_than_s: float = 3600) -> None:
    """Temporary report files of writers killed mid-write (an hour old: not someone's now)."""
    now = time.time()
    for tmp in folder.glob(f".{paths.name}.report-*.tmp"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()


def prune_reports(paths: StatePaths, folder: Path, keep: int) -> None:
    """Keep this database's newest `keep` reports in `folder` (another's stay as they are)."""
    if keep <= 0:
        return
    for old in paths.reports(folder)[:-keep]:
        old.unlink(missing_ok=True)


# ------------------------------------------------------------------------------ charts


def _figure(
    width: float,
    height: float,
    margins: tuple[float, float, float, float] = (0.6, 0.15, 0.45, 0.1),
    gaps: tuple[float, float] = (0.7, 0.7),
    nrows: int = 1,
    ncols: int = 1,
) -> tuple[Any, Any]:
    """A figure of `width` x `height` inches with fixed `margins` (left, right, bottom, top)
    and `gaps` (between columns, rows) in inches: a layout engine would draw every chart twice."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(width, height), dpi=100)
    left, right, bottom, top = margins
    axes_w = (width - left - right - (ncols - 1) * gaps[0]) / ncols
    axes_h = (height - bottom - top - (nrows - 1) * gaps[1]) / nrows
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, wspace=gaps[0] / axes_w, hspace=gaps[1] / axes_h)  # fmt: skip
    axes = fig.subplots(nrows, ncols)
    return fig, axes


def _style(ax: Any) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=8)
    ax.grid(axis="both", color="#e5e7eb", linewidth=0.6)
    ax.set_axisbelow(True)


def _img(fig: Any, alt: str) -> str:
    """The figure as an inline SVG image (a data URI: nothing is fetched to view it)."""
    import matplotlib

    buf = io.BytesIO()
    # Text stays text (smaller and faster than glyph outlines); a fixed salt and no date make
    # the same data draw the same SVG.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "recsys-report"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="data:image/svg+xml;base64,{data}" alt="{html.escape(alt)}">'


def _colors(models: list[str], winner: str) -> dict[str, str]:
    others = itertools.cycle(OTHERS)
    return {m: WINNER if m == winner else next(others) for m in models}


def timings_chart(timings: dict[str, float]) -> str:
    phases = list(timings)
    fig, ax = _figure(HALF, 0.32 * len(phases) + 0.6, margins=(1.0, 0.5, 0.45, 0.1))
    ax.barh(phases, [timings[p] for p in phases], color=WINNER)
    for i, phase in enumerate(phases):
        ax.annotate(f" {timings[phase]:.1f}s", (timings[phase], i), va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds", fontsize=8)
    ax.margins(x=0.15)
    _style(ax)
    return _img(fig, "seconds per phase: " + ", ".join(f"{p} {timings[p]:.1f}s" for p in phases))


def candidates_chart(candidates: pl.DataFrame, winner: str) -> str:
    ranking = candidates.filter(pl.col("metric").is_in(RANKING_METRICS))
    metric_names = [m for m in RANKING_METRICS if m in set(ranking["metric"])]
    models = sorted(set(ranking["model"]), key=lambda m: (m != winner, m))
    colors = _colors(models, winner)
    fig, ax = _figure(HALF, 3.0, margins=(0.6, 0.1, 0.35, 0.1))
    width = 0.8 / max(len(models), 1)
    values = {(r["model"], r["metric"]): r["value"] for r in ranking.iter_rows(named=True)}
    for j, model in enumerate(models):
        xs = [i + (j - (len(models) - 1) / 2) * width for i in range(len(metric_names))]
        ys = [values.get((model, m), 0.0) for m in metric_names]
        ax.bar(xs, ys, width, label=model + (" (chosen)" if model == winner else ""),
               color=colors[model])  # fmt: skip
    k = ranking["k"].drop_nulls()
    suffix = f"@{k[0]}" if len(k) else ""
    ax.set_xticks(range(len(metric_names)), [f"{m}{suffix}" for m in metric_names])
    ax.legend(fontsize=8, frameon=False)
    ax.set_ylabel("validation", fontsize=8)
    _style(ax)
    return _img(fig, "validation metrics per candidate model")


def _with_labels(history: pl.DataFrame) -> pl.DataFrame:
    """A `label` column: metric@k, or the metric alone when it has no k."""
    return history.with_columns(
        label=pl.when(pl.col("k").is_null())
        .then(pl.col("metric"))
        .otherwise(pl.format("{}@{}", "metric", "k"))
    )


def history_chart(history: pl.DataFrame, current_run: str) -> str:
    """One small chart per metric (rows labelled by `_with_labels`) over the runs."""
    labels = list(set(history["label"]))
    labels.sort(key=lambda label: (METRIC_ORDER.get(label.split("@")[0], 99), label))
    runs = sorted(set(history["run_id"]))
    ncols = min(4, len(labels))
    nrows = -(-len(labels) // ncols)
    fig, axes = _figure(FULL, 1.8 * nrows + 0.3, margins=(0.6, 0.1, 0.6, 0.5), gaps=(0.6, 0.9),
                        nrows=nrows, ncols=ncols)  # fmt: skip
    axes = np.asarray(axes, dtype=object).reshape(nrows, ncols)
    model_of = dict(history.select("run_id", "model").unique().iter_rows())
    models = sorted(set(model_of.values()))
    colors = _colors(models, model_of.get(current_run, ""))
    for ax, label in zip(axes.flat, labels, strict=False):
        rows = history.filter(pl.col("label") == label)
        xs = [runs.index(r) for r in rows["run_id"]]
        ax.plot(xs, rows["value"].to_list(), color="#cbd5e1", linewidth=1.2, zorder=1)
        ax.scatter(xs, rows["value"].to_list(), s=14, zorder=2,
                   c=[colors[model_of[r]] for r in rows["run_id"]])  # fmt: skip
        if current_run in runs:
            ax.axvline(runs.index(current_run), color="#94a3b8", linestyle=":", linewidth=0.8)
        ax.set_title(label, fontsize=9)
        ax.set_xticks(range(len(runs)), [_short_run(r) for r in runs], rotation=30, ha="right")
        ax.locator_params(axis="x", nbins=6)
        ax.set_xlim(-0.5, len(runs) - 0.5)
        _style(ax)
    for ax in list(axes.flat)[len(labels) :]:
        ax.set_visible(False)
    handles = [_dot(colors[m], m) for m in models]
    fig.legend(handles=handles, loc="upper right", fontsize=8, frameon=False, ncols=len(models))
    return _img(fig, "validation metrics of the served model over the last runs")


def popularity_chart(deciles: pl.DataFrame, long_tail: pl.DataFrame) -> str:
    fig, (left, right) = _figure(FULL, 2.9, margins=(0.6, 0.1, 0.5, 0.1), gaps=(0.9, 0), ncols=2)
    xs = deciles["popularity_decile"].to_list()
    left.bar([x - 0.2 for x in xs], deciles["share_of_interactions"].to_list(), 0.4,
             color=CATALOGUE, label="interactions")  # fmt: skip
    left.bar([x + 0.2 for x in xs], deciles["share_of_recommendations"].to_list(), 0.4,
             color=WINNER, label="recommendation slots")  # fmt: skip
    left.set_xticks(xs)
    left.set_xlabel("popularity decile of the catalogue (1 = most popular tenth)", fontsize=8)
    left.set_ylabel("share", fontsize=8)
    left.legend(fontsize=8, frameon=False)
    _style(left)
    share = long_tail["catalogue_share"].to_list()
    right.plot([0] + share, [0] + long_tail["cumulative_interactions"].to_list(),
               color=CATALOGUE, label="interactions")  # fmt: skip
    right.plot([0] + share, [0] + long_tail["cumulative_recommendations"].to_list(),
               color=WINNER, label="recommendation slots")  # fmt: skip
    right.plot([0, 1], [0, 1], color="#e5e7eb", linestyle="--", linewidth=0.8)
    right.set_xlabel("share of the catalogue, most popular first", fontsize=8)
    right.set_ylabel("cumulative share", fontsize=8)
    right.legend(fontsize=8, frameon=False, loc="lower right")
    _style(right)
    return _img(fig, "popularity of recommended items against the catalogue")


def lists_chart(list_lengths: pl.DataFrame | None, scores: pl.DataFrame | None) -> str:
    """List lengths and scores side by side; one of them alone at half width."""
    both = list_lengths is not None and scores is not None
    fig, axes = _figure(FULL if both else HALF, 2.4, margins=(0.6, 0.1, 0.5, 0.1), gaps=(0.9, 0),
                        ncols=2 if both else 1)  # fmt: skip
    axes = list(np.atleast_1d(axes))
    alt = []
    if list_lengths is not None:
        left = axes.pop(0)
        lengths = list_lengths["list_length"].to_list()
        left.bar(lengths, list_lengths["num_users"].to_list(), color=WINNER, width=0.8)
        left.set_xlim(min(lengths, default=1) - 1, max(lengths, default=1) + 1)
        left.xaxis.get_major_locator().set_params(integer=True)
        left.set_xlabel("items in a user's list", fontsize=8)
        left.set_ylabel("users", fontsize=8)
        _style(left)
        alt.append("list lengths")
    if scores is not None:
        right = axes.pop(0)
        starts, ends = scores["bin_start"].to_list(), scores["bin_end"].to_list()
        right.bar(starts, scores["num_rows"].to_list(),
                  [e - s for s, e in zip(starts, ends, strict=True)], align="edge", color=WINNER)  # fmt: skip
        right.set_xlabel("score", fontsize=8)
        right.set_ylabel("recommendations", fontsize=8)
        _style(right)
        alt.append("scores")
    return _img(fig, "distribution of " + " and of ".join(alt))


def sources_chart(sources: pl.DataFrame) -> str:
    fig, ax = _figure(HALF, 0.3 * sources.height + 0.6, margins=(1.0, 0.2, 0.45, 0.1))
    names = sources["source"].to_list()
    shares = sources["share_of_users"].to_list()
    ax.barh(names, shares, color=WINNER)
    for i, share in enumerate(shares):
        ax.annotate(f" {share:.1%}", (share, i), va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.15)
    ax.set_xlabel("share of users", fontsize=8)
    _style(ax)
    return _img(fig, "share of users served by each path")


def activity_chart(activity: pl.DataFrame, winner: str) -> str:
    buckets = activity.select("bucket", "min_history").unique().sort("min_history")
    names = buckets["bucket"].to_list()
    models = sorted(set(activity["model"]), key=lambda m: (m != winner, m))
    colors = _colors(models, winner)
    values = {(r["model"], r["bucket"]): r["ndcg"] for r in activity.iter_rows(named=True)}
    users = dict(activity.select("bucket", "num_users").unique("bucket").iter_rows())
    small = {b for b in names if users[b] < MIN_BUCKET_USERS}
    fig, ax = _figure(HALF, 3.0, margins=(0.6, 0.1, 0.75, 0.1))
    width = 0.8 / max(len(models), 1)
    for j, model in enumerate(models):
        xs = [i + (j - (len(models) - 1) / 2) * width for i in range(len(names))]
        means = [values.get((model, b), 0.0) for b in names]
        # The widest standard error a mean of n scores in [0, 1] can have: m(1 - m) / n; the
        # whiskers stop at 0 and 1, where NDCG does.
        spread = [1.96 * math.sqrt(max(m * (1 - m), 0.0) / max(users[b], 1))
                  for m, b in zip(means, names, strict=True)]  # fmt: skip
        whiskers = [[min(d, m) for d, m in zip(spread, means, strict=True)],
                    [min(d, 1 - m) for d, m in zip(spread, means, strict=True)]]  # fmt: skip
        bars = ax.bar(xs, means, width, color=colors[model], yerr=whiskers,
                      error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "#374151"},
                      label=model + (" (chosen)" if model == winner else ""))  # fmt: skip
        for bar, bucket in zip(bars, names, strict=True):
            if bucket in small:
                bar.set_alpha(0.45)
                bar.set_hatch("///")
    ax.set_xticks(range(len(names)),
                  [f"{b}\n{users[b]:,} users{' *' if b in small else ''}" for b in names])  # fmt: skip
    ax.set_xlabel("interactions in the user's training history", fontsize=8)
    k = activity["k"][0] if activity.height else 10
    ax.set_ylabel(f"validation NDCG@{k}", fontsize=8)
    ax.legend(fontsize=8, frameon=False)
    _style(ax)
    return _img(fig, "validation NDCG by user activity")


def _dot(color: str, label: str) -> Any:
    from matplotlib.lines import Line2D

    return Line2D([], [], marker="o", color=color, linestyle="", label=label)


def _label(metric: str, k: int | None) -> str:
    return f"{metric}@{k}" if k is not None else metric


def _short_run(run_id: str) -> str:
    """20261129T030635123456Z -> 11-29 03:06 (run ids made by the job; others as they are)."""
    match = re.fullmatch(r"\d{4}(\d\d)(\d\d)T(\d\d)(\d\d)\d+Z", run_id)
    return f"{match[1]}-{match[2]} {match[3]}:{match[4]}" if match else run_id[:16]


# -------------------------------------------------------------------------------- HTML

CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #111827; background: #f3f4f6; margin: 0; }
main { max-width: 1200px; margin: 0 auto; padding: 20px 24px 40px; }
header h1 { font-size: 22px; margin: 0 0 4px; }
header p { margin: 0; color: #4b5563; }
nav { margin: 10px 0 0; font-size: 13px; }
nav a { color: #2563eb; margin-right: 14px; text-decoration: none; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 13px;
         vertical-align: middle; font-weight: 600; }
.ok { background: #dcfce7; color: #166534; } .bad { background: #fee2e2; color: #991b1b; }
.other { background: #e5e7eb; color: #374151; }
.kpis { display: grid; grid-template-columns: repeat(6, 1fr); gap: 10px; margin: 16px 0 6px; }
.kpi { background: #fff; border-radius: 8px; padding: 10px 12px; box-shadow: 0 1px 2px #0000000f; }
.kpi b { display: block; font-size: 20px; } .kpi span { color: #6b7280; font-size: 12px; }
section { background: #fff; border-radius: 8px; padding: 14px 18px; margin: 14px 0;
          box-shadow: 0 1px 2px #0000000f; }
h2 { font-size: 17px; margin: 0 0 10px; }
h3 { font-size: 14px; margin: 12px 0 6px; color: #374151; }
.grid { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 16px;
        align-items: start; }
img { max-width: 100%; height: auto; display: block; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #f0f0f0; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.winner td { font-weight: 600; background: #eff6ff; }
table.kv th { color: #6b7280; font-weight: normal; width: 34%; }
.note { color: #6b7280; font-size: 13px; }
.forced { background: #fef3c7; color: #92400e; border-radius: 8px; padding: 8px 12px; }
.lead { font-size: 15px; margin: 0 0 10px; }
code { font-size: 12px; background: #f3f4f6; padding: 0 3px; border-radius: 3px; }
footer { color: #6b7280; font-size: 12px; margin-top: 18px; }
"""

SECTIONS = (
    ("run", "The run"),
    ("model-choice", "Model choice"),
    ("history", "Metric history"),
    ("recommended", "What is recommended"),
    ("activity", "Accuracy by user activity"),
)


# An absolute path's folders (up to its last part): a report is mailed and shared, and the
# server's layout is not for its readers.
ABSOLUTE_DIRS = re.compile(r"(?<![\w.:~/-])/(?:[^\s/:'\"]+/)+")


def _e(value: Any) -> str:
    """Text for the page: escaped, with absolute paths cut to their file name."""
    return html.escape(ABSOLUTE_DIRS.sub("", redact("" if value is None else str(value))))


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset(),
           row_class: list[str] | None = None) -> str:  # fmt: skip
    """An HTML table; cells are escaped by the caller."""

    def cls(i: int) -> str:
        return ' class="num"' if i in numeric else ""

    head = "".join(f"<th{cls(i)}>{h}</th>" for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        klass = f' class="{row_class[r]}"' if row_class and row_class[r] else ""
        body.append(
            f"<tr{klass}>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(row)) + "</tr>"
        )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _timings(run: dict[str, Any]) -> dict[str, float]:
    try:
        value = json.loads(run.get("timings") or "{}")
    except json.JSONDecodeError:
        return {}
    return {str(k): float(v) for k, v in value.items()} if isinstance(value, dict) else {}


@dataclass
class Choice:
    """The winner and its margin on the selection metric, from the metrics table."""

    label: str
    winner: str
    value: float | None
    runner_up: str | None
    runner_up_value: float | None

    @property
    def margin(self) -> float | None:
        if self.value is None or self.runner_up_value is None:
            return None
        return self.value - self.runner_up_value


def choice_of(data: ReportData) -> Choice:
    metric, k = data.selection
    winner = data.run.get("model") or ""
    rows = data.candidates.filter(pl.col("metric") == metric)
    if k is not None:
        rows = rows.filter(pl.col("k") == k)
    values = dict(rows.select("model", "value").iter_rows())
    others = sorted(
        (m for m in values if m != winner),
        key=lambda m: values[m] if metric in LOWER_IS_BETTER else -values[m],
    )
    runner_up = others[0] if others else None
    return Choice(_label(metric, k), winner, values.get(winner), runner_up,
                  values.get(runner_up) if runner_up else None)  # fmt: skip


def render_html(data: ReportData) -> str:
    run = data.run
    choice = choice_of(data)
    run_id = run["run_id"]
    status = run.get("status") or "?"
    badge = {"published": "ok", "failed": "bad", "abandoned": "bad"}.get(status, "other")
    timings = _timings(run)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>recsys run {_e(run_id)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        "<header>",
        f'<h1>Run {_e(run_id)} <span class="badge {badge}">{_e(status)}</span></h1>',
        f"<p>{_e(run.get('source'))} · model <b>{_e(run.get('model'))}</b> · finished "
        f"{_e(_when(run.get('finished_at')))}</p>",
        "<nav>" + "".join(f'<a href="#{sid}">{title}</a>' for sid, title in SECTIONS) + "</nav>",
        _kpis(data, choice, timings),
        "</header>",
    ]
    if run.get("force_publish"):
        parts.append(
            f'<p class="forced">Published past the quality gate with <code>--force-publish</code>: '
            f"{_e(run['force_publish'])}. What the gate found is in the run's message below.</p>"
        )
    parts += [f'<p class="note">{_e(note)}</p>' for note in data.notes]
    parts += [
        _run_section(data, timings),
        _choice_section(data, choice),
        _history_section(data),
        _recommended_section(data),
        _activity_section(data, choice),
        f"<footer>Written by <code>recsys report</code> {_e(code_version())} from "
        f"<code>{_e(data.database)}</code> at {_e(_when(datetime.now(UTC)))}. Every number is "
        "read from the published tables (runs, metrics, metrics_by_activity, recommendations, "
        "items), and the seconds per phase from the run ledger beside them, which alone holds "
        "the publish phase's time.</footer>",
        "</main>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def _when(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def _kpis(data: ReportData, choice: Choice, timings: dict[str, float]) -> str:
    run, summary = data.run, data.summary or {}
    margin = (
        f"{choice.margin:+.4f} vs {choice.runner_up}" if choice.margin is not None else "no rival"
    )
    cards = [
        (_e(run.get("model")), "model served"),
        (_num(choice.value), f"validation {_e(choice.label)} ({_e(margin)})"),
        (_num(run.get("num_users")), "users"),
        (_num(run.get("num_items")), "items"),
        (
            f"{summary['catalogue_coverage']:.1%}" if summary else "–",
            "catalogue coverage (items in at least one served list)",
        ),
        (f"{sum(timings.values()):.1f}s" if timings else "–", "run time (sum of phases)"),
    ]
    return '<div class="kpis">' + "".join(
        f'<div class="kpi"><b>{value}</b><span>{label}</span></div>' for value, label in cards
    ) + "</div>"  # fmt: skip


def _run_section(data: ReportData, timings: dict[str, float]) -> str:
    run = data.run
    users, items, interactions = (
        run.get(c) for c in ("num_users", "num_items", "num_interactions")
    )
    density = interactions / (users * items) if users and items and interactions else None
    status = run.get("status") or "?"
    exit_status = {"published": "exit 0"}.get(status, "")
    started, finished = run.get("started_at"), run.get("finished_at")
    rows = [
        ("status", f"{status} ({exit_status})" if exit_status else status),
        ("message", run.get("message")),
        *([("forced past the gate", run["force_publish"])] if run.get("force_publish") else []),
        ("source", run.get("source")),
        ("users × items", f"{_num(users)} × {_num(items)}"),
        ("interactions", _num(interactions)),
        ("density", f"{density:.3%}" if density is not None else "–"),
        ("recommendation rows", _num(run.get("num_rows"))),
        ("model", run.get("model")),
        ("hyper-parameters", run.get("params")),
        ("seed", run.get("seed")),
        ("code version", run.get("code_version")),
        ("started", _when(started)),
        ("finished", _when(finished)),
    ]
    kv = "<table class=\"kv\"><tbody>" + "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows
    ) + "</tbody></table>"  # fmt: skip
    chart = timings_chart(timings) if timings else '<p class="note">No timings recorded.</p>'
    recent = _table(
        ["run", "status", "model", "rows", "message"],
        [
            [
                _e(r["run_id"]) + (" ◀" if r["run_id"] == run["run_id"] else ""),
                _e(r["status"]),
                _e(r["model"]),
                _num(r["num_rows"]),
                _e(r["message"]),
            ]
            for r in data.recent_runs.iter_rows(named=True)
        ],
        numeric={3},
    )
    return (
        f'<section id="run"><h2>The run</h2><div class="grid"><div>{kv}</div>'
        f"<div><h3>Seconds per phase</h3>{chart}</div></div>"
        f"<h3>Recent runs</h3>{recent}</section>"
    )


def _choice_section(data: ReportData, choice: Choice) -> str:
    candidates = data.candidates
    head = '<section id="model-choice"><h2>Model choice</h2>'
    if not candidates.height:
        return head + '<p class="note">No validation metrics recorded for this run.</p></section>'
    if choice.margin is not None:
        relative = (
            f" ({choice.margin / abs(choice.runner_up_value):+.1%})"
            if choice.runner_up_value
            else ""
        )
        lead = (
            f"<b>{_e(choice.winner)}</b> won on validation {_e(choice.label)} = "
            f"{_num(choice.value)}, {choice.margin:+.4f}{relative} over the runner-up "
            f"<b>{_e(choice.runner_up)}</b> ({_num(choice.runner_up_value)})."
        )
    elif choice.value is not None:
        lead = (
            f"<b>{_e(choice.winner)}</b> was the only candidate with validation "
            f"{_e(choice.label)} ({_num(choice.value)}); nothing to compare with."
        )
    else:
        lead = f"<b>{_e(choice.winner)}</b> served; its {_e(choice.label)} is not recorded."
    quality = candidates.filter(~pl.col("metric").is_in(TIMING_METRICS))
    columns = sorted(
        {_label(m, k) for m, k in quality.select("metric", "k").unique().iter_rows()},
        key=lambda label: (METRIC_ORDER.get(label.split("@")[0], len(METRIC_ORDER)), label),
    )
    models = sorted(set(candidates["model"]), key=lambda m: (m != choice.winner, m))
    values = {(r["model"], _label(r["metric"], r["k"])): r["value"]
              for r in candidates.iter_rows(named=True)}  # fmt: skip
    header = [_e(m) + (" (chosen)" if m == choice.winner else "") for m in models]
    table = _table(
        ["validation", *header],
        [[_e(c)] + [_num(values.get((m, c))) for m in models] for c in columns],
        numeric=set(range(1, len(models) + 1)),
        row_class=["winner" if c == choice.label else "" for c in columns],
    )
    timings = [t for t in TIMING_METRICS if t in set(candidates["metric"])]
    if timings:  # how long each took is not a quality metric: a table of its own
        table += "<h3>Time to train (not a quality metric)</h3>" + _table(
            ["timing", *header],
            [[_e(t.replace("_", " "))] + [_num(values.get((m, t)), 1) for m in models]
             for t in timings],
            numeric=set(range(1, len(models) + 1)),
        )  # fmt: skip
    coverage = [c for c in columns if c.split("@")[0] == "coverage"]
    if coverage:
        table += (
            f'<p class="note">{_e(coverage[0])} is the share of the training catalogue found in '
            "the lists that each candidate, trained on the split, gave the validation users. The "
            "catalogue coverage at the top of the report counts the served lists of every user "
            "from the refitted model, so the two differ.</p>"
        )
    chart = (
        candidates_chart(candidates, choice.winner)
        if len(models) > 1
        else '<p class="note">One candidate: nothing to compare, so no chart.</p>'
    )
    return (
        f'{head}<p class="lead">{lead}</p><div class="grid"><div>{table}</div>'
        f"<div>{chart}</div></div></section>"
    )


def _history_section(data: ReportData) -> str:
    head = '<section id="history"><h2>Metric history</h2>'
    history = _with_labels(data.history.filter(~pl.col("metric").is_in(TIMING_METRICS)))
    if not history.height:
        return head + '<p class="note">No published run with metrics yet.</p></section>'
    num_runs = history["run_id"].n_unique()
    if num_runs < 2:
        return head + (
            '<p class="note">Only one published run so far: a history needs two points, so '
            "there is no chart yet. This run's validation metrics are under Model choice.</p>"
            "</section>"
        )
    points = history.group_by("label").len()
    single = sorted(points.filter(pl.col("len") < 2)["label"])
    lead = (
        f"Validation metrics of the model each of the last {num_runs} published runs served "
        f"(colour = model; dotted line = this run)."
    )
    if single:
        lead += f" Not drawn, with one value so far: {', '.join(single)}."
    chart = history_chart(history.filter(~pl.col("label").is_in(single)), data.run["run_id"])
    return f'{head}<p class="note">{_e(lead)}</p>{chart}</section>'


def _recommended_section(data: ReportData) -> str:
    head = '<section id="recommended"><h2>What is recommended</h2>'
    if data.summary is None:
        return (
            head + '<p class="note">This run\'s recommendations are not in this file.</p></section>'
        )
    s = data.summary
    deciles = data.deciles
    top = deciles.filter(pl.col("popularity_decile") == 1) if deciles is not None else None
    top_line = ""
    if top is not None and top.height:
        top_line = (
            f" The most popular tenth of the catalogue gets "
            f"<b>{top['share_of_recommendations'][0]:.1%}</b> of recommendation slots "
            f"(it has {top['share_of_interactions'][0]:.1%} of interactions)."
        )
    lengths = data.list_lengths
    top_n = int(lengths["list_length"].max()) if lengths is not None and lengths.height else 0
    lead = (
        f"{_num(s['num_rows'])} recommendations for {_num(s['num_users'])} users; "
        f"<b>{_num(s['num_recommended_items'])}</b> of {_num(s['num_items'])} items recommended "
        f"at least once (catalogue coverage <b>{s['catalogue_coverage']:.1%}</b>: items in the "
        f"served top-{top_n} list of at least one user; the validation coverage under Model "
        f"choice is measured on other lists).{top_line}"
    )
    sources = data.sources
    if sources.height > 1:
        source_table = _table(
            ["path (source)", "users", "share"],
            [[_e(r["source"]), _num(r["num_users"]), f"{r['share_of_users']:.1%}"]
             for r in sources.iter_rows(named=True)],
            numeric={1, 2},
        ) + sources_chart(sources)  # fmt: skip
    else:
        only = sources.row(0, named=True) if sources.height else {"source": "–", "num_users": 0}
        source_table = (
            f'<p class="note">Every user ({_num(only["num_users"])}) was served by the '
            f"<b>{_e(only['source'])}</b> path, so there is no chart.</p>"
        )
    most = data.most_recommended
    most_rows = most.head(10).iter_rows(named=True) if most is not None else []
    most_table = _table(
        ["item", "title", "users", "share", "interactions"],
        [[_e(r["item_id"]), _e(r["title"]), _num(r["num_users"]), f"{r['share_of_users']:.1%}",
          _num(r["num_interactions"])] for r in most_rows],
        numeric={2, 3, 4},
    )  # fmt: skip
    return (
        f'{head}<p class="lead">{lead}</p>'
        f"<h3>Popularity of recommended items against the catalogue (long tail)</h3>"
        f"{popularity_chart(deciles, data.long_tail)}"
        f'<div class="grid"><div><h3>Users served by each path</h3>{source_table}</div>'
        f"<div><h3>Most recommended items</h3>{most_table}</div></div>"
        f"<h3>List lengths and scores</h3>{_lists(lengths, data.scores)}"
        "</section>"
    )


def _lists(lengths: pl.DataFrame | None, scores: pl.DataFrame | None) -> str:
    """The list-length and score charts, each only when it has more than one bar."""
    notes = []
    if lengths is not None and lengths.height == 1:
        notes.append(f"Every user's list has {lengths['list_length'][0]} items.")
        lengths = None
    if scores is not None and scores.height == 1:
        notes.append(f"Every score is {scores['bin_start'][0]:.4g}.")
        scores = None
    lengths = lengths if lengths is not None and lengths.height else None
    scores = scores if scores is not None and scores.height else None
    text = f'<p class="note">{_e(" ".join(notes))}</p>' if notes else ""
    return text + (
        lists_chart(lengths, scores) if lengths is not None or scores is not None else ""
    )


def _activity_section(data: ReportData, choice: Choice) -> str:
    head = '<section id="activity"><h2>Accuracy by user activity</h2>'
    activity = data.activity
    if activity is None or not activity.height:
        return head + (
            '<p class="note">No evaluation split for this run (no metrics_by_activity rows): '
            "nothing was held out, or the run was published before this was recorded.</p></section>"
        )
    winner = choice.winner if choice.winner in set(activity["model"]) else ""
    buckets = activity.select("bucket", "min_history").unique().sort("min_history")["bucket"]
    models = sorted(set(activity["model"]), key=lambda m: (m != winner, m))
    values = {(r["model"], r["bucket"]): r["ndcg"] for r in activity.iter_rows(named=True)}
    users = dict(activity.select("bucket", "num_users").unique("bucket").iter_rows())
    k = activity["k"][0]
    table = _table(
        ["training history", "users", *[_e(m) for m in models]],
        [[_e(b), _num(users[b]) + (" *" if users[b] < MIN_BUCKET_USERS else "")]
         + [_num(values.get((m, b))) for m in models] for b in buckets],
        numeric=set(range(1, len(models) + 2)),
    )  # fmt: skip
    note = (
        f"Validation NDCG@{k} of every candidate for users grouped by how many interactions they "
        "had in training (the chosen model in blue). Whiskers: ±1.96·√(m(1−m)/n) for a bucket's "
        "mean m over n users, at least as wide as a 95% interval for scores between 0 and 1."
    )
    if any(n < MIN_BUCKET_USERS for n in users.values()):
        note += f" * Fewer than {MIN_BUCKET_USERS} users: too few to read (hatched in the chart)."
    chart = (
        activity_chart(activity, winner)
        if len(buckets) > 1 or len(models) > 1
        else '<p class="note">One bucket and one model: nothing to compare, so no chart.</p>'
    )
    return (
        f'{head}<p class="note">{_e(note)}</p>'
        f'<div class="grid"><div>{chart}</div><div>{table}</div></div></section>'
    )
