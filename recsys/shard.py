"""Sharded scoring: rank K of N scores a contiguous slice of the users (and of the items, for
similar_items) into Parquet parts with a manifest; `read_parts` checks that the N ranks' parts
are present, whole and from one checkpoint before they are published as one run.

A parts folder: `<table>/part-KKKKK-of-NNNNN.parquet` per table and rank, each written under a
temporary name and renamed, then `manifest-KKKKK-of-NNNNN.json` (rows, users, range, sha256):
a rank is done exactly when its manifest exists. A rank that fails leaves `error-….json`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from recsys import duck, faults
from recsys.checkpoint import TrainedModel
from recsys.config import ScoringConfig
from recsys.errors import DataError, MissingInputError
from recsys.files import fsync_path
from recsys.ledger import now_iso
from recsys.recommend import (
    recommendation_batches,
    scorable_items,
    similar_item_batches,
    similar_item_queries,
    similar_items_skipped,
    topn_batch,
)
from recsys.score import TopN, scoring_dtype

log = logging.getLogger(__name__)

FORMAT = "recsys-parts/1"
# (table, query column): each table is sharded by its query (user, item), in index order.
TABLES = {"recommendations": "user_id", "similar_items": "item_id"}
# Rows per Parquet row group: large enough for fast scans, small enough to buffer (~30 MB).
ROW_GROUP_ROWS = 1 << 20
_HASH_BLOCK = 8 << 20
MANIFEST_NAME = re.compile(r"manifest-(\d{5})-of-(\d{5})\.json")


def shard_range(num: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous slice of `num` indices: sizes differ by at most one,
    balanced by count (index order is ID order, so the slices are ID ranges too)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
    return num * rank // world_size, num * (rank + 1) // world_size


def _stem(rank: int, world_size: int) -> str:
    return f"{rank:05d}-of-{world_size:05d}"


def part_file(table: str, rank: int, world_size: int) -> str:
    """A part's path relative to the parts folder."""
    return f"{table}/part-{_stem(rank, world_size)}.parquet"


def manifest_path(folder: Path, rank: int, world_size: int) -> Path:
    return folder / f"manifest-{_stem(rank, world_size)}.json"


def error_path(folder: Path, rank: int, world_size: int) -> Path:
    return folder / f"error-{_stem(rank, world_size)}.json"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_fingerprint(path: str | Path) -> str:
    """What identifies a checkpoint in the manifests: the sha256 of its file."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path}: checkpoint not found")
    return "sha256:" + file_sha256(path)


def _write_json(path: Path, payload: dict) -> None:
    """Whole or absent: written under a temporary name, fsynced, renamed."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)


def clear_rank(folder: Path, rank: int, world_size: int) -> None:
    """Remove what an earlier attempt of this rank left: its manifest first (so the rank
    reads as missing until it is done again), its error report and temporary files."""
    manifest_path(folder, rank, world_size).unlink(missing_ok=True)
    error_path(folder, rank, world_size).unlink(missing_ok=True)
    stem = _stem(rank, world_size)
    for table in TABLES:
        for leftover in (folder / table).glob(f".part-{stem}.parquet.tmp-*"):
            leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def reporting_errors(folder: Path, rank: int, world_size: int) -> Iterator[None]:
    """On failure, leave `error-….json` saying why, for the step that publishes the parts."""
    try:
        yield
    except BaseException as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        with contextlib.suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
            _write_json(error_path(folder, rank, world_size),
                        {"rank": rank, "world_size": world_size, "error": reason,
                         "host": socket.gethostname(), "pid": os.getpid(), "at": now_iso()})  # fmt: skip
        raise


def reported_errors(folder: Path) -> dict[int, str]:
    """Rank -> the error a failed rank reported (see `reporting_errors`)."""
    errors: dict[int, str] = {}
    for path in sorted(folder.glob("error-*.json")):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            report = json.loads(path.read_text())
            errors[int(report["rank"])] = str(report["error"])
    return errors


def unfinished(folder: Path, world_size: int) -> str:
    """Which ranks have no manifest yet, with the errors failed ones reported ("" if none)."""
    errors = reported_errors(folder)
    missing = [r for r in range(world_size) if not manifest_path(folder, r, world_size).exists()]
    return "; ".join(
        f"rank {r} of {world_size} " + (f"failed: {errors[r]}" if r in errors else "unfinished")
        for r in missing
    )


# ------------------------------------------------------------------------------ writing


def write_shard(
    trained: TrainedModel,
    fingerprint: str,
    folder: Path,
    rank: int,
    world_size: int,
    scoring: ScoringConfig,
    device: torch.device,
    checkpoint: str = "",
) -> dict:
    """Score rank's slice of users (and of items for similar_items) into Parquet parts in
    `folder`, then write its manifest; returns the manifest. Running it again replaces them."""
    folder.mkdir(parents=True, exist_ok=True)
    clear_rank(folder, rank, world_size)
    dtype, budget = scoring_dtype(scoring.dtype), scoring.memory_budget_bytes
    label = f" (rank {rank} of {world_size})" if world_size > 1 else ""
    tables: dict[str, dict] = {}

    lo, hi = shard_range(len(trained.users), rank, world_size)
    users = np.arange(lo, hi, dtype=np.int64)
    batches = recommendation_batches(trained, scoring.top_n, device, dtype, budget,
                                     queries=users, what=f"scoring users{label}")  # fmt: skip
    empty = topn_batch(_no_rows(), trained.users, trained.items, ("user_id", "item_id"),
                       np.zeros(0, np.int8))  # fmt: skip
    tables["recommendations"] = _write_part(folder, "recommendations", rank, world_size, batches,
                                            (lo, hi), empty, pause=True)  # fmt: skip

    skipped = similar_items_skipped(trained, scoring.similar_items_n)
    if skipped:
        log.info("similar_items: skipped (%s)", skipped)
    else:
        queries = similar_item_queries(trained)
        lo, hi = shard_range(len(queries), rank, world_size)
        batches = similar_item_batches(trained, scoring.similar_items_n, device, budget,
                                       queries=queries[lo:hi], what=f"similar items{label}")  # fmt: skip
        empty = topn_batch(_no_rows(), trained.items, trained.items,
                           ("item_id", "similar_item_id"))  # fmt: skip
        tables["similar_items"] = _write_part(folder, "similar_items", rank, world_size, batches,
                                              (lo, hi), empty)  # fmt: skip
    manifest = {
        "format": FORMAT,
        "rank": rank,
        "world_size": world_size,
        "checkpoint": {
            "fingerprint": fingerprint,
            "path": str(checkpoint),
            "model": trained.model.name,
        },
        "num_users": len(trained.users),
        "num_items": len(trained.items),
        "top_n": scoring.top_n,
        "similar_items_n": scoring.similar_items_n if not skipped else 0,
        "tables": tables,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "written_at": now_iso(),
    }
    _write_json(manifest_path(folder, rank, world_size), manifest)
    log.info("rank %d of %d: %s -> %s", rank, world_size,
             ", ".join(f"{t} {i['rows']} rows ({i['seconds']:.1f}s)" for t, i in tables.items()),
             manifest_path(folder, rank, world_size))  # fmt: skip
    return manifest


def _no_rows() -> TopN:
    return TopN(np.zeros(0, np.int64), np.zeros((0, 0), np.int32), np.zeros((0, 0), np.float32),
                np.zeros(0, np.int64))  # fmt: skip


def _write_part(
    folder: Path,
    table: str,
    rank: int,
    world_size: int,
    batches: Iterable[pa.Table],
    queries: tuple[int, int],
    empty: pa.Table,
    pause: bool = False,
) -> dict:
    """Stream `batches` into the part's temporary file, then fsync and rename it; `empty`
    gives the schema when there are none."""
    start = time.monotonic()
    final = folder / part_file(table, rank, world_size)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    key = TABLES[table]
    writer: pq.ParquetWriter | None = None
    pending: list[pa.Table] = []
    buffered = rows = users = 0
    first = last = None
    try:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            if writer is None:
                writer = pq.ParquetWriter(tmp, batch.schema)
                first = batch[key][0].as_py()
            pending.append(batch)
            buffered += batch.num_rows
            rows += batch.num_rows
            # a query's rows are never split across batches (a chunk holds whole lists)
            users += len(batch[key].unique())
            last = batch[key][-1].as_py()
            if buffered >= ROW_GROUP_ROWS:
                writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                pending, buffered = [], 0
            if pause:  # the part is half written: the moment a kill test wants
                faults.point("scoring")
                pause = False
        if writer is None:  # an empty slice still leaves a (valid, empty) part
            writer = pq.ParquetWriter(tmp, empty.schema)
        if pending:
            writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
        writer.close()
        writer = None
        fsync_path(tmp)
        os.replace(tmp, final)
        fsync_path(final.parent)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    return {
        "file": part_file(table, rank, world_size),
        "rows": rows,
        "users" if table == "recommendations" else "items": users,
        "index_range": list(queries),  # [start, stop) of the query indices
        "first_id": first,
        "last_id": last,
        "bytes": final.stat().st_size,
        "sha256": file_sha256(final),
        "seconds": round(time.monotonic() - start, 3),
    }


# ----------------------------------------------------------------------------- checking


@dataclass
class Parts:
    """A checked parts folder: every rank's manifest, in rank order."""

    folder: Path
    manifests: list[dict]

    @property
    def world_size(self) -> int:
        return len(self.manifests)

    def files(self, table: str) -> list[Path]:
        """The table's parts in rank order, so rows load in ID order."""
        return [self.folder / m["tables"][table]["file"] for m in self.manifests
                if table in m["tables"]]  # fmt: skip

    def rows(self, table: str) -> int:
        return sum(m["tables"][table]["rows"] for m in self.manifests if table in m["tables"])

    def seconds(self) -> float:
        """Scoring seconds of the slowest rank."""
        return max(sum(t["seconds"] for t in m["tables"].values()) for m in self.manifests)


def read_parts(
    folder: Path, trained: TrainedModel, fingerprint: str, checkpoint: str = ""
) -> Parts:
    """Every rank's manifest and parts in `folder`, checked: all ranks of one world size
    present, made from this checkpoint, each part file whole (size and sha256), no part file
    beside them, and the rows what the checkpoint implies: each rank's users (and items)
    inside its slice, none missing, none twice. Raises DataError naming the ranks otherwise."""
    if not folder.is_dir():
        raise MissingInputError(f"{folder}: no such folder (expected the --parts folder of `recsys score`)")  # fmt: skip
    manifests: dict[str, dict] = {}
    problems: list[str] = []
    for path in sorted(
        p for p in folder.glob("manifest-*.json") if MANIFEST_NAME.fullmatch(p.name)
    ):
        try:
            manifest = json.loads(path.read_text())
            if manifest.get("format") != FORMAT:
                raise ValueError(f"format {manifest.get('format')!r}, expected {FORMAT}")
            manifests[path.name] = manifest
        except (OSError, ValueError, AttributeError) as exc:
            problems.append(f"{path.name}: unreadable ({str(exc).splitlines()[0]})")
    # by file name: a manifest copied under another rank's name is caught below, by content
    sizes = sorted({int(MANIFEST_NAME.fullmatch(name)[2]) for name in manifests})
    if len(sizes) > 1:
        raise _refused(folder, [f"manifests of different runs (world sizes "
                                f"{', '.join(map(str, sizes))}); use one folder per run"])  # fmt: skip
    if not sizes:
        raise _refused(folder, ["no manifest-*.json (no rank has finished); "
                                "run `recsys score --parts` first"])  # fmt: skip
    world = sizes[0]
    by_rank: dict[int, dict] = {}
    for name, manifest in manifests.items():
        says = (manifest.get("rank"), manifest.get("world_size"))
        rank, size = (int(n) for n in MANIFEST_NAME.fullmatch(name).groups())
        if says != (rank, size):
            problems.append(f"{name}: says rank {says[0]} of {says[1]} (a copied manifest?)")
        else:
            by_rank[rank] = manifest
    errors = reported_errors(folder)
    for rank in range(world):
        if rank not in by_rank:
            why = (
                f"it failed: {errors[rank]}"
                if rank in errors
                else "not run, still running or killed"
            )
            problems.append(f"rank {rank} of {world} missing (no manifest: {why})")
    reference = by_rank.get(min(by_rank)) if by_rank else None
    for rank, manifest in sorted(by_rank.items()):
        problems += _check_manifest(folder, rank, manifest, reference, fingerprint)
    # Parts of missing ranks are reported as such; any other Parquet file there is a stray.
    named = {part_file(t, r, world) for t in TABLES for r in range(world)}
    for table in TABLES:
        for path in sorted((folder / table).glob("*.parquet")):
            name = f"{table}/{path.name}"
            if name not in named and not path.name.startswith("."):
                problems.append(f"{name}: not in any manifest (a duplicate or a part of "
                                f"another run?); move it out of {folder}")  # fmt: skip
    if not problems:
        parts = Parts(folder, [by_rank[r] for r in range(world)])
        problems = _check_rows(parts, trained)
    if problems:
        rerun = f"recsys score --checkpoint {checkpoint or 'CHECKPOINT'} --parts {folder} --shard K/{world}"
        raise _refused(folder, problems, f" (re-run a rank K with `{rerun}`)")
    return parts


def _refused(folder: Path, problems: list[str], hint: str = "") -> DataError:
    return DataError(f"{folder}: parts refused, nothing was published: {'; '.join(problems)}{hint}")


def _check_manifest(
    folder: Path, rank: int, manifest: dict, reference: dict, fingerprint: str
) -> list[str]:
    """A manifest against the checkpoint, rank 0's settings and its own part files."""
    made_from = manifest.get("checkpoint", {}).get("fingerprint")
    if made_from != fingerprint:
        return [f"rank {rank}: scored with another checkpoint ({str(made_from)[:19]}…, "
                f"this one is {fingerprint[:19]}…)"]  # fmt: skip
    problems = []
    for setting in ("top_n", "similar_items_n"):
        if manifest.get(setting) != reference.get(setting):
            problems.append(f"rank {rank}: {setting} {manifest.get(setting)}, rank "
                            f"{reference['rank']} has {reference.get(setting)}")  # fmt: skip
    for info in manifest.get("tables", {}).values():
        path = folder / info["file"]
        if not path.exists():
            problems.append(f"rank {rank}: {info['file']} missing")
        elif path.stat().st_size != info["bytes"]:
            problems.append(f"rank {rank}: {info['file']} is {path.stat().st_size} bytes, its "
                            f"manifest says {info['bytes']} (truncated or overwritten)")  # fmt: skip
        elif file_sha256(path) != info["sha256"]:
            problems.append(f"rank {rank}: {info['file']} does not match its manifest's sha256 "
                            "(corrupt or overwritten)")  # fmt: skip
    if set(manifest.get("tables", {})) != set(reference.get("tables", {})):
        problems.append(f"rank {rank}: tables {sorted(manifest.get('tables', {}))}, rank "
                        f"{reference['rank']} has {sorted(reference.get('tables', {}))}")  # fmt: skip
    return problems


def expected_rows(trained: TrainedModel, top_n: int) -> np.ndarray:
    """(num_users,) rows each user's list has: top_n, or fewer when fewer items are unseen."""
    allowed = scorable_items(trained)
    indptr, indices = trained.seen.indptr, trained.seen.indices
    if allowed.all():
        seen = np.diff(indptr)
    else:  # the seen items that could have been recommended
        cumulative = np.concatenate([[0], np.cumsum(allowed[indices], dtype=np.int64)])
        seen = cumulative[indptr[1:]] - cumulative[indptr[:-1]]
    return np.minimum(min(top_n, len(allowed)), int(allowed.sum()) - seen)


def _check_rows(parts: Parts, trained: TrainedModel) -> list[str]:
    """Each part's rows against what the checkpoint implies for that rank's slice: its query
    IDs inside the slice (so no query twice across parts), as many queries and rows as the
    checkpoint gives (so none missing)."""
    first = parts.manifests[0]
    per_query = {"recommendations": expected_rows(trained, first["top_n"])}
    ids = {"recommendations": trained.users.ids}
    if "similar_items" in first["tables"]:
        queries = similar_item_queries(trained)
        k = min(first["similar_items_n"], len(trained.items))
        per_query["similar_items"] = np.full(len(queries), min(k, len(queries) - 1))
        ids["similar_items"] = trained.items.ids.gather(queries)
    problems = []
    with duck.connect() as con:
        for table, rows_of in per_query.items():
            key = TABLES[table]
            for manifest in parts.manifests:
                rank = manifest["rank"]
                lo, hi = shard_range(len(rows_of), rank, parts.world_size)
                info = manifest["tables"][table]
                found = con.execute(
                    f"select count(*), count(distinct {key}), min({key}), max({key}) "
                    "from read_parquet(?)",
                    [str(parts.folder / info["file"])],
                ).fetchone()
                expected = (int(rows_of[lo:hi].sum()), int((rows_of[lo:hi] > 0).sum()))
                span = (ids[table][lo], ids[table][hi - 1]) if hi > lo else None
                if found[0] and (span is None or not span[0] <= found[2] <= found[3] <= span[1]):
                    where = f"{span[0]}..{span[1]}" if span else "nothing"
                    problems.append(f"rank {rank}: {info['file']} has {key} {found[2]}..{found[3]}, "
                                    f"outside its slice {where} (a {key} twice?)")  # fmt: skip
                elif tuple(found[:2]) != expected:
                    problems.append(f"rank {rank}: {info['file']} has {found[0]} rows for "
                                    f"{found[1]} {key}s, the checkpoint gives {expected[0]} for "
                                    f"{expected[1]} in its slice")  # fmt: skip
    return problems
