"""The HTML run report: valid, self-contained, every section, numbers as the tables hold them;
written by nightly for every published run; a failure there never fails the publish."""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import matplotlib.image
import polars as pl
import pytest

from recsys import report
from recsys.config import OutputConfig
from recsys.state import state_paths
from recsys.warehouse import open_read_only
from scripts import report_screenshot
from tests.conftest import TwoRuns, read_table, run_cli

SECTIONS = ("run", "model-choice", "history", "recommended", "activity")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}  # fmt: skip
FETCHING = {"script": "src", "img": "src", "link": "href", "iframe": "src", "source": "src",
            "video": "src", "audio": "src", "embed": "src", "object": "data"}  # fmt: skip


class Page(HTMLParser):
    """Tags that do not balance, ids, every attribute that names a resource, and the text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, tuple[int, int]]] = []
        self.errors: list[str] = []
        self.ids: set[str] = set()
        self.resources: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.images: list[str] = []
        self.texts: list[str] = []
        self.feed(text)
        self.close()
        self.errors += [f"<{tag}> opened at {pos} is never closed" for tag, pos in self.stack]

    @property
    def text(self) -> str:
        return re.sub(r"\s+", " ", " ".join(self.texts))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(tag, attrs)
        if tag not in VOID:
            self.stack.append((tag, self.getpos()))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            self.errors.append(f"</{tag}> at {self.getpos()}: a void element has no end tag")
        elif not self.stack or self.stack[-1][0] != tag:
            open_tag = self.stack[-1][0] if self.stack else "nothing"
            self.errors.append(f"</{tag}> at {self.getpos()} closes {open_tag}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if not self.stack or self.stack[-1][0] not in ("style", "script"):
            self.texts.append(data)

    def _attrs(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if "id" in values:
            self.ids.add(values["id"])
        for name in ("src", "href", "data", "srcset", "poster", "action"):
            if name in values:
                self.resources.append((tag, name, values[name]))
        if tag == "img":
            self.images.append(values.get("src", ""))


def check_self_contained_html(path: Path, images: int = 6) -> Page:
    """Valid, balanced HTML with every section; every image inline and a valid SVG; nothing
    that a browser would fetch from the network. Charts (`images`): timings, candidates,
    history (from a second run on), popularity, scores, activity; lists of one length and a
    single path are sentences instead."""
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    page = Page(text)
    assert not page.errors, page.errors[:5]
    assert set(SECTIONS) <= page.ids
    assert len(page.images) == images
    for tag, attribute, value in page.resources:
        assert not value.lower().startswith(("http://", "https://", "//")), (tag, attribute, value)
        if tag in FETCHING and attribute == FETCHING[tag]:
            assert value.startswith("data:"), f"<{tag} {attribute}={value[:60]}> is not embedded"
        if tag == "a":
            assert value.startswith("#") and value[1:] in page.ids, value
    assert not re.search(r"<script[^>]*\bsrc=", text, re.IGNORECASE)
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", text, re.IGNORECASE)
    for src in page.images:
        prefix = "data:image/svg+xml;base64,"
        assert src.startswith(prefix), src[:60]
        svg = base64.b64decode(src[len(prefix) :])
        root = ET.fromstring(svg)  # well-formed XML
        assert root.tag.endswith("svg")
        for element in root.iter():
            for name, value in element.attrib.items():
                if name.endswith("href"):
                    assert value.startswith("#"), f"an SVG links {value}"
    return page


# ------------------------------------------------------------------- on published runs


def test_report_command_writes_valid_self_contained_html(two_runs: TwoRuns, tmp_path: Path) -> None:
    out = tmp_path / "out" / "report.html"
    result = run_cli("report", "--database", str(two_runs.database), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {out} (run {two_runs.run_ids[1]})"
    page = check_self_contained_html(out)
    for title in ("The run", "Model choice", "Metric history", "What is recommended",
                  "Accuracy by user activity", "Seconds per phase", "long tail",
                  "Users served by each path", "List lengths and scores"):  # fmt: skip
        assert title in page.text, title


def test_nightly_writes_a_report_per_run_and_latest(two_runs: TwoRuns) -> None:
    folder = two_runs.database.parent
    first, second = (folder / f"recs.report-{run_id}.html" for run_id in two_runs.run_ids)
    latest = folder / "recs.report-latest.html"
    assert first.exists() and second.exists()
    assert latest.read_bytes() == second.read_bytes()
    assert f"report: {second}" in two_runs.nightly_stdout.splitlines()
    page = check_self_contained_html(latest)
    assert f"Run {two_runs.run_ids[1]} published" in page.text
    assert not list(folder.glob(".*.tmp"))


def test_report_numbers_are_the_tables_numbers(two_runs: TwoRuns) -> None:
    run_id = two_runs.run_ids[1]
    page = check_self_contained_html(two_runs.database.parent / f"recs.report-{run_id}.html")
    metrics = read_table(
        two_runs.database,
        f"select model, value from metrics where run_id = '{run_id}' and metric = 'ndcg' and k = 10",
    )
    served = read_table(two_runs.database, f"select * from runs where run_id = '{run_id}'")
    values = dict(metrics.iter_rows())
    winner = served["model"][0]
    (other,) = set(values) - {winner}
    margin = values[winner] - values[other]
    assert (
        f"{winner} won on validation ndcg@10 = {values[winner]:.4f}, {margin:+.4f}"
        f" ({margin / values[other]:+.1%}) over the runner-up {other} ({values[other]:.4f})"
    ) in page.text
    num_users, num_items, num_interactions = (
        served[c][0] for c in ("num_users", "num_items", "num_interactions")
    )
    assert f"density {num_interactions / (num_users * num_items):.3%}" in page.text
    coverage = read_table(
        two_runs.database,
        "select (select count(distinct item_id) from recommendations) / (select count(*) from items) as c",
    )["c"][0]
    assert f"catalogue coverage {coverage:.1%}" in page.text
    assert "Validation metrics of the model each of the last 2 published runs served" in page.text
    assert all(r in page.text for r in two_runs.run_ids)  # the recent-runs table
    by_activity = read_table(
        two_runs.database, f"select * from metrics_by_activity where run_id = '{run_id}'"
    )
    assert by_activity.height
    for row in by_activity.iter_rows(named=True):
        assert f"{row['ndcg']:.4f}" in page.text
        assert f"{row['bucket']} {row['num_users']:,}" in page.text


def test_activity_buckets_add_up_to_the_overall_ndcg(two_runs: TwoRuns) -> None:
    """Buckets partition the evaluated users, so their user-weighted NDCG is the overall one."""
    rows = read_table(
        two_runs.database,
        """
        select a.run_id, a.model, sum(a.num_users * a.ndcg) / sum(a.num_users) as weighted,
               any_value(m.value) as overall
        from metrics_by_activity a
        join metrics m on m.run_id = a.run_id and m.model = a.model
            and m.metric = 'ndcg' and m.k = a.k and m.split = a.split
        group by a.run_id, a.model
        """,
    )
    assert rows.height == 4  # 2 runs x 2 candidates, the first run's rows carried over
    for row in rows.iter_rows(named=True):
        assert row["weighted"] == pytest.approx(row["overall"], abs=1e-9)


def test_report_of_an_archived_run_and_of_an_unknown_one(two_runs: TwoRuns, tmp_path: Path) -> None:
    first = two_runs.run_ids[0]
    out = tmp_path / "first.html"
    result = run_cli(
        "report", "--database", str(two_runs.database), "--run", first, "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    page = check_self_contained_html(out, images=5)  # its history had one run
    assert f"Run {first} published" in page.text
    assert f"from {first}.duckdb at" in page.text  # the archived copy, named
    assert str(two_runs.database.parent) not in page.text  # no server paths in a shared page
    assert "catalogue coverage" in page.text  # its own recommendations, from the archive

    result = run_cli("report", "--database", str(two_runs.database), "--run", "nope")
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: run nope is not in {two_runs.database}'s runs table")
    assert len(result.stderr.strip().splitlines()) == 1

    result = run_cli("report", "--database", str(tmp_path / "none.duckdb"))
    assert result.returncode == 66
    assert "no published database here yet" in result.stderr


def test_readers_work_while_a_publish_is_in_progress(two_runs: TwoRuns) -> None:
    """During the second run's publish (paused before its replace) the look-ups and the report
    read the first run, as the served file held it."""
    during = two_runs.during_publish
    for name, result in during.items():
        assert result.returncode == 0, (name, result.stderr)
    first = two_runs.database.parent / "recs.archive" / f"{two_runs.run_ids[0]}.duckdb"
    with duckdb.connect(str(first), read_only=True) as con:
        con.execute("set variable user_id = ?", [two_runs.user_id])
        query = report.shipped_query("because_you_watched")
        expected = con.sql(query).fetchall()
    assert len(during["user"].stdout.splitlines()) == len(expected) + 1
    assert during["report"].stdout.startswith("wrote ")
    assert f"(run {two_runs.run_ids[0]})" in during["report"].stdout


def test_report_and_show_do_not_import_torch(two_runs: TwoRuns, tmp_path: Path) -> None:
    code = f"""
import sys
from jobs.cli import main
for args in (["report", "--database", {str(two_runs.database)!r}, "--out", {str(tmp_path / "r.html")!r}],
             ["show", "user", {str(two_runs.user_id)!r}, "--database", {str(two_runs.database)!r}],
             ["show", "item", {str(two_runs.item_id)!r}, "--database", {str(two_runs.database)!r}]):
    try:
        main(args, standalone_mode=False)
    except SystemExit as exc:
        assert not exc.code, (args, exc.code)
assert "torch" not in sys.modules, "torch was imported"
print("no torch")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("no torch")


def test_report_screenshot_in_a_headless_browser(two_runs: TwoRuns, tmp_path: Path) -> None:
    """`make report-screenshot`: the whole page, however tall, from its top to its footer."""
    browser = report_screenshot.find_browser()
    if browser is None:
        pytest.skip("no chromium on PATH: the headless-browser screenshot needs one")
    shot = tmp_path / "report.png"
    latest = two_runs.database.parent / "recs.report-latest.html"
    height = report_screenshot.full_page(browser, latest, shot, width=1280, tallest=12000)
    width, png_height = png_size(shot)
    assert (width, png_height) == (1280, height)
    assert 2400 < height < 12000  # taller than the old fixed window; trimmed below the footer
    pixels = matplotlib.image.imread(shot)
    assert report_screenshot.content_height(pixels) == height - report_screenshot.MARGIN
    assert shot.stat().st_size > 50_000  # drawn, not a blank page


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_readme_screenshot_is_the_whole_report() -> None:
    """docs/report.png is not cut at a window edge: it ends in blank page below the footer."""
    shot = Path(__file__).resolve().parent.parent / "docs" / "report.png"
    width, height = png_size(shot)
    pixels = matplotlib.image.imread(shot)
    assert width == 1280
    assert report_screenshot.content_height(pixels) == height - report_screenshot.MARGIN


# -------------------------------------------------------------------------- in process


def test_missing_sections_say_why(two_runs: TwoRuns) -> None:
    with open_read_only(two_runs.database) as con:
        data = report.load_report_data(con, "x.duckdb", two_runs.run_ids[1], True)
    bare = dataclasses.replace(data, activity=None, summary=None, history=data.history.clear())
    page = Page(report.render_html(bare))
    assert not page.errors
    assert "No evaluation split for this run" in page.text
    assert "This run's recommendations are not in this file." in page.text
    assert "No published run with metrics yet." in page.text


def test_a_failed_report_is_a_warning(
    two_runs: TwoRuns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    served = two_runs.database
    before = served.stat().st_mtime_ns
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with caplog.at_level(logging.WARNING, logger="recsys.report"):
        assert report.publish_report(OutputConfig(report_dir=str(blocked / "reports")), served,
                                     two_runs.run_ids[1]) == ""  # fmt: skip

        def broken(data):
            raise RuntimeError("chart exploded")

        monkeypatch.setattr(report, "render_html", broken)
        assert report.publish_report(OutputConfig(report_dir=str(tmp_path / "r")), served,
                                     two_runs.run_ids[1]) == ""  # fmt: skip
    messages = [r.getMessage() for r in caplog.records]
    assert any("run report not written" in m and "published all the same" in m for m in messages)
    assert any("RuntimeError: chart exploded" in m for m in messages)
    assert not list((tmp_path / "r").glob("*.html"))
    assert served.stat().st_mtime_ns == before


def test_latest_and_pruning(tmp_path: Path) -> None:
    paths = state_paths(tmp_path / "recs.duckdb")
    other = tmp_path / "other.report-20250101T000000000000Z.html"  # another database's
    other.write_text("theirs")
    for run_id in ("20260101T000000000000Z", "20260102T000000000000Z", "20260103T000000000000Z"):
        path = paths.report(tmp_path, run_id)
        path.write_text(run_id)
        report.update_latest(path, paths.latest_report(tmp_path))
        report.prune_reports(paths, tmp_path, keep=2)
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["other.report-20250101T000000000000Z.html",
                    "recs.report-20260102T000000000000Z.html",
                    "recs.report-20260103T000000000000Z.html", "recs.report-latest.html"]  # fmt: skip
    assert paths.latest_report(tmp_path).read_text() == "20260103T000000000000Z"
    stale, fresh = tmp_path / ".recs.report-x.html.1.tmp", tmp_path / ".recs.report-y.html.2.tmp"
    stale.write_text("killed mid-write")
    fresh.write_text("being written")
    os.utime(stale, (0, 0))
    report.clear_stale_temporaries(paths, tmp_path)
    assert not stale.exists() and fresh.exists()
    fresh.unlink()
    os.unlink(paths.report(tmp_path, "20260103T000000000000Z"))  # a link: latest outlives it
    assert paths.latest_report(tmp_path).read_text() == "20260103T000000000000Z"


def test_selection_metric_comes_from_the_run_message() -> None:
    message = "bpr chosen by validation recall@20 = 0.3000 (runner-up popularity: 0.2000)"
    assert report.selection_of(message, ("ndcg", 10)) == ("recall", 20)
    assert report.selection_of("mf_bias chosen by validation rmse = 0.9", ("ndcg", 10)) == (
        "rmse",
        None,
    )
    assert report.selection_of("", ("ndcg", 10)) == ("ndcg", 10)


# ------------------------------------------------------------------ what the charts carry


def alts(html_text: str) -> list[str]:
    return re.findall(r'<img src="data:[^"]*" alt="([^"]*)"', html_text)


def svg_texts(html_text: str, alt: str = "") -> str:
    """The text drawn inside every chart (whose alt text starts with `alt`)."""
    images = re.findall(r'<img src="data:image/svg\+xml;base64,([^"]*)" alt="([^"]*)"', html_text)
    return " ".join(
        "".join(ET.fromstring(base64.b64decode(src)).itertext())
        for src, text in images
        if text.startswith(alt)
    )


@pytest.fixture
def data(two_runs: TwoRuns) -> report.ReportData:
    with open_read_only(two_runs.database) as con:
        return report.load_report_data(con, "x.duckdb", two_runs.run_ids[1], True)


def test_charts_that_cannot_carry_information_are_sentences(data: report.ReportData) -> None:
    one_length = data.list_lengths.head(1)
    one_path = data.sources.head(1).with_columns(share_of_users=1.0)
    first_run = data.history.filter(data.history["run_id"] == data.history["run_id"].min())
    text = report.render_html(
        dataclasses.replace(data, list_lengths=one_length, sources=one_path, history=first_run)
    )
    page = Page(text)
    assert not page.errors
    shown = alts(text)
    assert not [a for a in shown if "list lengths" in a or "path" in a or "over the last" in a]
    assert "distribution of scores" in shown
    assert f"Every user's list has {one_length['list_length'][0]} items." in page.text
    assert f"Every user ({one_path['num_users'][0]:,}) was served by the model path" in page.text
    assert "Only one published run so far: a history needs two points" in page.text

    # With two runs, a metric that has one value so far is named, not drawn.
    history = data.history.filter(
        (data.history["metric"] != "hitrate") | (data.history["run_id"] == data.run["run_id"])
    )
    text = report.render_html(dataclasses.replace(data, history=history))
    assert "Not drawn, with one value so far: hitrate@10." in Page(text).text
    drawn = svg_texts(text, "validation metrics of the served model over the last runs")
    assert "ndcg@10" in drawn and "hitrate" not in drawn


def test_timings_are_apart_from_quality(data: report.ReportData) -> None:
    assert "train_seconds" in set(data.candidates["metric"])  # recorded as a metric row...
    text = report.render_html(data)
    page = Page(text)
    assert "Time to train (not a quality metric)" in page.text
    validation_table = text.split("<th>validation</th>")[1].split("</table>")[0]
    assert "train_seconds" not in validation_table and "train seconds" not in validation_table
    assert "train_seconds" not in svg_texts(text)  # ... but never charted as quality


def test_publish_is_in_the_phase_chart(two_runs: TwoRuns) -> None:
    """The served file's own runs row is written during its publish; the ledger has the time."""
    run_id = two_runs.run_ids[1]
    own = read_table(two_runs.database, f"select timings from runs where run_id = '{run_id}'")
    assert "publish" not in own["timings"][0]
    _, text = report.build_report(two_runs.database)
    (phases,) = [a for a in alts(text) if a.startswith("seconds per phase")]
    assert re.search(r"publish \d+\.\ds", phases), phases


def test_the_two_coverage_figures_are_explained(data: report.ReportData) -> None:
    page = Page(report.render_html(data))
    assert "items in the served top-10 list of at least one user" in page.text
    assert "coverage@10 is the share of the training catalogue found in the lists" in page.text


def test_small_activity_buckets_are_marked(data: report.ReportData) -> None:
    activity = data.activity.with_columns(
        num_users=pl.when(pl.col("min_history") == pl.col("min_history").min())
        .then(3)
        .otherwise(pl.col("num_users"))
    )
    small = activity.filter(pl.col("num_users") == 3)["bucket"][0]
    text = report.render_html(dataclasses.replace(data, activity=activity))
    page = Page(text)
    assert f"{small} 3 *" in page.text
    assert "Fewer than 30 users: too few to read" in page.text
    assert "3 users *" in svg_texts(text, "validation NDCG by user activity")
    assert "Whiskers: ±1.96·√(m(1−m)/n)" in page.text
