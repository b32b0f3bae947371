"""The nightly job's steps, end to end: load -> split -> train candidates -> choose -> refit ->
score every user -> stage -> gate -> publish. Jobs call these; they hold no CLI code."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from recsys import faults, gate, interrupts, logs, progress, report, shard
from recsys.checkpoint import TrainedModel, load_checkpoint
from recsys.config import Config
from recsys.data.tables import parse_source
from recsys.dataset import DEMO_SOURCE, Dataset, load_dataset
from recsys.distributed import Group, stop_on_sigterm
from recsys.errors import QualityGateError, RecsysError, UsageError
from recsys.evaluate import activity_frame, metrics_frame
from recsys.ledger import now_iso
from recsys.metrics import RANKING_METRICS
from recsys.recommend import (
    recommendation_batches,
    score_spread,
    similar_item_batches,
    similar_items_skipped,
)
from recsys.redact import redact
from recsys.score import resolve_device, scoring_dtype
from recsys.select import check_settings, train_and_choose
from recsys.version import code_version
from recsys.warehouse import Published, StagedDatabase, Warehouse, duckdb_type

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    run_id: str
    model: str
    num_users: int
    num_items: int
    num_rows: int
    num_similar_rows: int
    database: str
    selection: str
    timings: dict[str, float] = field(default_factory=dict)
    report: str = ""  # the run report's path, "" when none was written
    forced: str = ""  # what --force-publish overrode, for the run's message ("" when not given)


class Timer:
    """Seconds per phase, in order."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        progress.set_phase(name)
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.monotonic() - start, 3)


# ----------------------------------------------------------------------- score + publish


Stager = Callable[[TrainedModel, str, Warehouse, Timer], tuple[StagedDatabase, int, int]]
"""(trained, run_id, warehouse, timer) -> the staged database (closed) and its row counts of
recommendations and similar_items: where a run's rows come from (scoring, or Parquet parts)."""


def _stage(
    trained: TrainedModel,
    run_id: str,
    warehouse: Warehouse,
    expected_rows: int,
    fill: Callable[[StagedDatabase], tuple[int, int]],
) -> tuple[StagedDatabase, int, int]:
    """Check free space, create the staged database, `fill` its recommendations and
    similar_items, add the catalogue and histories; discarded again on any failure."""
    warehouse.check_free_space(expected_rows + trained.history.height)
    staged = warehouse.stage(
        run_id, duckdb_type(trained.users.dtype), duckdb_type(trained.items.dtype)
    )
    try:
        num_rows, num_similar = fill(staged)
        staged.insert_frame("items", trained.catalogue)
        if trained.history.height:
            staged.insert_frame("user_history", trained.history)
        return staged, num_rows, num_similar
    except BaseException:
        warehouse.discard(staged)
        raise


def stage_results(
    trained: TrainedModel,
    config: Config,
    run_id: str,
    warehouse: Warehouse,
    timer: Timer,
    device: torch.device,
) -> tuple[StagedDatabase, int, int]:
    """Build the new database in the staging folder by scoring every user here; returns it
    (closed) and row counts."""
    top = config.scoring.top_n

    def fill(staged: StagedDatabase) -> tuple[int, int]:
        with timer.phase("score"):
            batches = recommendation_batches(
                trained,
                top,
                device,
                scoring_dtype(config.scoring.dtype),
                config.scoring.memory_budget_bytes,
            )
            num_rows = staged.write_batches("recommendations", batches)
        with timer.phase("similar_items"):
            num_similar = _stage_similar_items(staged, trained, config, device)
        return num_rows, num_similar

    expected = expected_rows(len(trained.users), len(trained.items), config)
    return _stage(trained, run_id, warehouse, expected, fill)


def expected_rows(num_users: int, num_items: int, config: Config) -> int:
    """Most rows scoring can write: a user gets at most every item, an item every other one
    (top_n beyond the catalogue must not ask for disk that can never be used)."""
    top, similar = config.scoring.top_n, config.scoring.similar_items_n
    return num_users * min(top, num_items) + num_items * min(similar, max(num_items - 1, 0))


def check_space_before_training(dataset: Dataset, config: Config) -> None:
    """The free-space check, with the loaded data's sizes, before hours of training; the
    publish checks again before it writes."""
    data = dataset.interactions
    per_user = np.bincount(data.frame["user_idx"].to_numpy(), minlength=data.num_users)
    n = config.output.history_n
    history = int(np.minimum(per_user, n).sum()) if n > 0 else len(data)
    warehouse = Warehouse(config.output.database, free_space_factor=config.output.free_space_factor)
    warehouse.check_free_space(expected_rows(data.num_users, data.num_items, config) + history)


def _stage_similar_items(
    staged: StagedDatabase, trained: TrainedModel, config: Config, device: torch.device
) -> int:
    n = config.scoring.similar_items_n
    skipped = similar_items_skipped(trained, n)
    if skipped:
        log.info("similar_items: skipped (%s)", skipped)
        return 0
    batches = similar_item_batches(trained, n, device, config.scoring.memory_budget_bytes)
    return staged.write_batches("similar_items", batches)


def stage_parts(
    trained: TrainedModel, parts: shard.Parts, run_id: str, warehouse: Warehouse, timer: Timer
) -> tuple[StagedDatabase, int, int]:
    """Build the new database from checked Parquet parts (`shard.read_parts`), loaded in rank
    order: the parts are consecutive ID ranges, so the tables stay sorted by ID."""

    def fill(staged: StagedDatabase) -> tuple[int, int]:
        with timer.phase("load_parts"):
            return (
                staged.load_parquet("recommendations", parts.files("recommendations")),
                staged.load_parquet("similar_items", parts.files("similar_items")),
            )

    expected = parts.rows("recommendations") + parts.rows("similar_items")
    return _stage(trained, run_id, warehouse, expected, fill)


def run_row(
    trained: TrainedModel,
    run_id: str,
    started_at: str,
    status: str,
    num_rows: int,
    message: str,
    timings: dict,
    force_publish: str = "",
) -> dict:
    return {
        "run_id": run_id,
        "started_at": started_at,
        "finished_at": now_iso(),
        "status": status,
        "model": trained.model.name,
        "params": json.dumps(trained.model.params(), sort_keys=True),
        "source": trained.source,
        "num_users": len(trained.users),
        "num_items": len(trained.items),
        "num_interactions": trained.num_interactions,
        "num_rows": num_rows,
        "code_version": code_version(),
        "seed": trained.seed,
        "message": message,
        "timings": json.dumps(timings),
        "force_publish": force_publish or None,
    }


RUN_COLUMNS = [
    "run_id", "started_at", "finished_at", "status", "model", "params", "source", "num_users",
    "num_items", "num_interactions", "num_rows", "code_version", "seed", "message", "timings",
    "force_publish",
]  # fmt: skip


def publish_trained(
    trained: TrainedModel,
    config: Config,
    run_id: str,
    started_at: str,
    warehouse: Warehouse,
    timer: Timer,
    stage: Stager | None = None,
    force_publish: str = "",
    held: interrupts.Held | None = None,
) -> RunSummary:
    """Stage (by default: score every user here), gate and publish one run of a trained model
    (the lock must be held). `force_publish` (a reason) publishes past the gate's comparisons
    with the last published run, never past its checks of this run's own rows. From the
    publish on, SIGINT and SIGTERM are `held`."""
    previous = warehouse.published()
    if stage is None:
        device = resolve_device(config.scoring.device)
        staged, num_rows, num_similar = stage_results(
            trained, config, run_id, warehouse, timer, device
        )
    else:
        staged, num_rows, num_similar = stage(trained, run_id, warehouse, timer)
    try:
        faults.point("staged")
        with timer.phase("publish"):
            metric, k = config.model.selection_metric, config.model.selection_k
            value = next(
                (
                    m.value
                    for m in trained.metrics
                    if m.model == trained.model.name and m.metric == metric
                ),
                None,
            )
            k = k if metric in RANKING_METRICS else None
            popularity = next(
                (m.value for m in [*trained.metrics, *trained.baseline]
                 if m.model == "popularity" and m.metric == metric and m.k == k),
                None,
            )  # fmt: skip
            spread = score_spread(trained, resolve_device(config.scoring.device))
            current = gate.GateInput(metric, k, value, popularity, trained.fitted,
                                     spread if np.isfinite(spread) else None)  # fmt: skip
            forced = _gate(staged, config, current, previous, force_publish)
            message = trained.selection + forced
            history = _history(warehouse, trained, run_id, started_at, num_rows, timer.seconds,
                               message, force_publish)  # fmt: skip
            staged.insert_frame("runs", history)
            old_metrics = previous.metrics if previous is not None else None
            new_metrics = metrics_frame(trained.metrics, run_id, "validation")
            staged.insert_frame(
                "metrics",
                pl.concat([old_metrics, new_metrics]) if old_metrics is not None else new_metrics,
            )
            new_activity = activity_frame(trained.by_activity, run_id, "validation")
            old_activity = previous.by_activity if previous is not None else None
            if old_activity is not None and old_activity.height:
                new_activity = pl.concat([old_activity.cast(new_activity.schema), new_activity])
            staged.insert_frame("metrics_by_activity", new_activity)
            staged.close()
            faults.point("gated")
            if held is not None:
                held.hold()  # the replace and its ledger line are not to be cut apart
            warehouse.publish(staged, run_id)
    except BaseException:
        warehouse.discard(staged)
        raise
    faults.point("published")  # served, not yet in the ledger: the next run records it
    return RunSummary(run_id, trained.model.name, len(trained.users), len(trained.items), num_rows,
                      num_similar, str(warehouse.served), trained.selection, dict(timer.seconds),
                      forced=forced)  # fmt: skip


def _gate(
    staged: StagedDatabase,
    config: Config,
    current: gate.GateInput,
    previous: Published | None,
    force_publish: str,
) -> str:
    """Run the quality gate; raise when it refuses. With `force_publish` (a reason), problems
    found only by comparing with the last published run are overridden; problems in this
    run's own rows never are. Returns the note for the run's message ("" when not forced)."""
    if not config.gate.enabled:
        return f"; --force-publish ({force_publish}): the gate is off" if force_publish else ""
    problems = gate.check(staged, config.gate, current, previous)
    if not problems:
        return (
            f"; --force-publish ({force_publish}) not needed: the gate passed"
            if force_publish
            else ""
        )
    own = gate.check(staged, config.gate, current, None)  # without the last run to compare with
    if own:
        hint = "; --force-publish does not override these" if force_publish else ""
        raise QualityGateError(
            f"quality gate failed: {'; '.join(own)}{hint}; nothing was published"
        )
    if not force_publish:
        raise QualityGateError(
            f"quality gate failed: {'; '.join(problems)}; nothing was published (if the change is "
            "intended, publish it with --force-publish REASON)"
        )
    log.warning("quality gate failed: %s; published anyway by --force-publish: %s",
                "; ".join(problems), force_publish)  # fmt: skip
    return f"; published past the quality gate by --force-publish ({force_publish}): {'; '.join(problems)}"


def _history(
    warehouse: Warehouse,
    trained: TrainedModel,
    run_id: str,
    started_at: str,
    num_rows: int,
    timings: dict,
    message: str,
    force_publish: str,
) -> pl.DataFrame:
    """The ledger as the `runs` table, this run marked published."""
    rows = [
        {c: _as_text(r.get(c)) for c in RUN_COLUMNS}
        for r in warehouse.ledger.runs()
        if r["run_id"] != run_id
    ]
    rows.append(
        run_row(trained, run_id, started_at, "published", num_rows, message, timings, force_publish)
    )
    frame = pl.DataFrame(rows, schema={c: pl.String for c in RUN_COLUMNS}, strict=False)
    return frame.with_columns(
        pl.col("started_at", "finished_at").str.to_datetime(time_zone="UTC", strict=False),
        pl.col("num_users", "num_items", "num_interactions", "num_rows", "seed").cast(
            pl.Int64, strict=False
        ),
    )


def _as_text(value: object) -> object:
    """Ledger values as the all-text frame takes them: a failed run's timings are an object
    in the ledger, and one such value would fail every later publish."""
    return json.dumps(value) if isinstance(value, dict | list) else value


def check_demo_over_real(warehouse: Warehouse, source: str, allow_demo: bool) -> None:
    """The demo data never replaces a file built from a real source unless asked to
    (`nightly --demo`): a cron line whose variable is unset must not serve made-up lists."""
    if source != DEMO_SOURCE or allow_demo:
        return
    served = warehouse.served_row()
    if served and served.get("source") and served["source"] != DEMO_SOURCE:
        raise UsageError(
            f"{warehouse.served} serves run {served['run_id']}, built from {served['source']}; "
            "this run has no source and would replace it with the demo data. Give "
            "--interactions (or source.interactions), or use `recsys nightly --demo` to "
            "replace it on purpose"
        )


def run_job(
    config: Config,
    make_trained,
    run_id: str | None = None,
    stage: Stager | None = None,
    force_publish: str = "",
    allow_demo: bool = False,
) -> RunSummary:
    """Check the target (exit 73 before any work), lock, record the run in the ledger, build
    the model with `make_trained(timer)`, stage its rows with `stage` (default: score them
    here), gate (see `_gate` for `force_publish`) and publish. Any failure is recorded as
    'failed' with its one-line reason, then re-raised; a signal that arrives once the publish
    began waits until the run is recorded (`recsys.interrupts`). Without `run_id` one is made
    under the lock, so published ids only go forwards. The demo data replaces a real source's
    run only with `allow_demo`."""
    warehouse = Warehouse(
        config.output.database, config.output.keep_archives, config.output.free_space_factor
    )
    log_dir = Path(config.output.log_dir) if config.output.log_dir else warehouse.paths.logs
    warehouse.check_target(input_paths(config), log_dir)
    faults.point("starting")
    with (
        warehouse.lock(run_id) as run_id,
        logs.run_log(log_dir / f"{run_id}.log", run_id),
        interrupts.Held("publishing: the run is recorded first") as held,
    ):
        started_at = now_iso()
        warehouse.ledger.append(run_id, status="running", started_at=started_at, seed=config.training.seed,
                                code_version=code_version())  # fmt: skip
        timer = Timer()
        trained = None
        try:
            faults.point("locked")
            trained = make_trained(timer)
            check_demo_over_real(warehouse, trained.source, allow_demo)
            faults.point("trained")
            summary = publish_trained(trained, config, run_id, started_at, warehouse, timer, stage,
                                      force_publish, held)  # fmt: skip
        except BaseException as exc:
            reason = redact(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
            log.debug("run failed: %s", reason, exc_info=True)
            if warehouse.record_if_served(run_id, f"published, then {reason}"):
                raise  # interrupted after the replace: served, and recorded so
            warehouse.ledger.append(
                run_id,
                status="failed",
                finished_at=now_iso(),
                message=reason,
                timings=timer.seconds,
                **({"model": trained.model.name} if trained is not None else {}),
            )
            raise
        row = run_row(
            trained,
            run_id,
            started_at,
            "published",
            summary.num_rows,
            trained.selection + summary.forced,
            timer.seconds,
            force_publish,
        )
        del row["run_id"]
        warehouse.ledger.append(
            run_id,
            **row,
            metrics={
                f"{m.model}.{m.metric}" + (f"@{m.k}" if m.k else ""): round(m.value, 6)
                for m in trained.metrics
            },
        )
        faults.point("recorded")
        if held.received:  # published and recorded: the exit is 0, whatever came meanwhile
            log.warning("run %s is published and recorded; %s arrived after its publish began, "
                        "so the run report is skipped and the exit is 0", run_id,
                        " and ".join(dict.fromkeys(held.received)))  # fmt: skip
        elif config.output.report:  # published already: a failed report is only a warning
            progress.set_phase("report")
            summary.report = report.publish_report(config.output, warehouse.served, run_id)
        return summary


def input_paths(config: Config) -> dict[str, Path]:
    """The files the configured sources read (a publish must never replace one of them)."""
    found = {}
    for key in ("interactions", "user_features", "item_features", "users_to_score"):
        spec = getattr(config.source, key)
        if spec:
            with contextlib.suppress(RecsysError, OSError):  # reading it reports what is wrong
                found[f"source.{key}"] = parse_source(spec).path
    return found


def nightly(
    config: Config, run_id: str | None = None, allow_demo: bool = False, force_publish: str = ""
) -> RunSummary:
    check_settings(config)  # again for library callers; the command checked before its log

    def make_trained(timer: Timer) -> TrainedModel:
        if not config.source.interactions:  # refused before the demo data is even made
            check_demo_over_real(Warehouse(config.output.database), DEMO_SOURCE, allow_demo)
        device = resolve_device(config.training.device)
        with timer.phase("load"):
            dataset = load_dataset(config)
        check_space_before_training(dataset, config)
        with timer.phase("train"):
            return train_and_choose(dataset, config, device)

    return run_job(config, make_trained, run_id, force_publish=force_publish, allow_demo=allow_demo)


# ------------------------------------------------------------------------- sharded runs


def checkpoint_loader(checkpoint: Path) -> Callable[[Timer], TrainedModel]:
    """`run_job`'s model maker for a run that scores a trained checkpoint."""

    def load(timer: Timer) -> TrainedModel:
        with timer.phase("load"):
            return load_checkpoint(checkpoint)

    return load


def score_shard(
    config: Config,
    checkpoint: Path,
    parts: Path,
    rank: int,
    world_size: int,
    device: torch.device | None = None,
) -> dict:
    """Score rank `rank` of `world_size` with the checkpoint into the parts folder; returns
    its manifest. A failure leaves `error-….json` there for the publishing step to report."""
    with shard.reporting_errors(parts, rank, world_size):
        trained = load_checkpoint(checkpoint)
        fingerprint = shard.checkpoint_fingerprint(checkpoint)
        device = device or resolve_device(config.scoring.device)
        return shard.write_shard(trained, fingerprint, parts, rank, world_size, config.scoring,
                                 device, str(checkpoint))  # fmt: skip


def score_parts(
    config: Config, checkpoint: Path, parts: Path, group: Group, force_publish: str = ""
) -> RunSummary | None:
    """Every rank of `group` scores its shard into `parts`; rank 0, which holds the run (lock,
    ledger) from the start, waits for all of them at a barrier, then checks the parts and
    publishes them as one run. Returns its summary on rank 0, None on the others."""
    if group.rank != 0:
        score_shard(config, checkpoint, parts, group.rank, group.world_size, group.device)
        group.barrier()
        return None

    def stage(
        trained: TrainedModel, run_id: str, warehouse: Warehouse, timer: Timer
    ) -> tuple[StagedDatabase, int, int]:
        with timer.phase("score"), shard.reporting_errors(parts, 0, group.world_size):
            fingerprint = shard.checkpoint_fingerprint(checkpoint)
            shard.write_shard(trained, fingerprint, parts, 0, group.world_size, config.scoring,
                              group.device, str(checkpoint))  # fmt: skip
        with timer.phase("barrier"):
            try:
                group.barrier()
            except RecsysError as exc:
                raise RecsysError(f"{exc}; {shard.unfinished(parts, group.world_size)}") from None
        return _stage_checked_parts(trained, checkpoint, parts, run_id, warehouse, timer,
                                    fingerprint)  # fmt: skip

    if not group.backend:
        return run_job(config, checkpoint_loader(checkpoint), stage=stage,
                       force_publish=force_publish)  # fmt: skip
    with stop_on_sigterm(lambda: shard.unfinished(parts, group.world_size)):
        return run_job(config, checkpoint_loader(checkpoint), stage=stage,
                       force_publish=force_publish)  # fmt: skip


def publish_parts(
    config: Config, checkpoint: Path, parts: Path, force_publish: str = ""
) -> RunSummary:
    """Check the parts that `score --parts` wrote (every rank present and whole, from this
    checkpoint) and publish them as one run; any problem publishes nothing."""

    def stage(
        trained: TrainedModel, run_id: str, warehouse: Warehouse, timer: Timer
    ) -> tuple[StagedDatabase, int, int]:
        return _stage_checked_parts(trained, checkpoint, parts, run_id, warehouse, timer)

    return run_job(config, checkpoint_loader(checkpoint), stage=stage, force_publish=force_publish)


def _stage_checked_parts(
    trained: TrainedModel,
    checkpoint: Path,
    parts: Path,
    run_id: str,
    warehouse: Warehouse,
    timer: Timer,
    fingerprint: str = "",
) -> tuple[StagedDatabase, int, int]:
    with timer.phase("check_parts"):
        fingerprint = fingerprint or shard.checkpoint_fingerprint(checkpoint)
        checked = shard.read_parts(parts, trained, fingerprint, str(checkpoint))
    log.info("publishing %d part(s) from %s: %d recommendations, %d similar-item rows",
             checked.world_size, parts, checked.rows("recommendations"),
             checked.rows("similar_items"))  # fmt: skip
    timer.seconds["score"] = checked.seconds()  # the slowest rank's, as the run's scoring time
    return stage_parts(trained, checked, run_id, warehouse, timer)
