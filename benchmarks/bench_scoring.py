"""All-users top-N with seen items excluded: this project's engine against implicit, faiss and
numpy, side by side in one process on the same factors and seen matrix (`make bench`).

Three factor shapes per size: `random` (users and items N(0, 1/d)), `popularity` (a shared
direction every user likes, item norms Zipf-like in a hidden popularity rank: the shape of
trained MF) and `ties` (entries in {-1/4, 0, 1/4}: scores take a few dozen exact values, so
hundreds of items tie at each user's N-th score).

Each peer is used the fastest way its documentation allows, and its settings are tuned on a
slice of the users before the timed runs: faiss `IndexFlatIP.search` in chunks of users with
the seen items of each chunk dropped, at its best OpenMP thread count; implicit's batched
`recommend(..., filter_already_liked_items=True)` at its best thread setting (OpenBLAS at
one thread, as implicit asks, or implicit at one thread); numpy (sgemm, -inf on seen,
argpartition) at its best chunk size. The floor is the bare fp32 matrix product in the fastest
of three layouts (the engine's blocks or 64-user products on one worker thread per core, or
1,024-user products on torch's own thread team).

Methods run in interleaved rounds; the tables keep each method's best round (the machine may
be shared: the load average is printed). Timing is wall clock, with the process CPU seconds
beside it; "pairs/s" is users x items / seconds. Peak memory is the largest RSS above the
process's RSS before the run, sampled every 10 ms (plus CUDA's peak allocation). Every
method's lists are checked against an exact float64 top-N on sampled users: a method agrees
when its items are a true top-N up to ties (every item it returns scores within 1e-4
relative of the N-th best unseen score, no seen item, no repeat, and it returns
min(N, unseen) items).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

from recsys import score
from recsys.data.idmap import IdMap
from recsys.recommend import MODEL, topn_batch
from recsys.score import (
    BYTES_PER_SCORE,
    FactorScorer,
    SeenMatrix,
    chunk_rows,
    kernel_available,
    resolve_device,
    scoring_dtype,
    top_n,
)
from recsys.warehouse import StagedDatabase

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SHAPES = ("random", "popularity", "ties")
SAMPLE_USERS = 2000  # users whose lists are kept and checked against the float64 truth
OURS = "this project"
PEERS = ("implicit recommend", "faiss IndexFlatIP", "numpy argpartition")
FLOOR = "bare fp32 GEMM"


@dataclass
class Case:
    """One size and factor shape: factors, the seen CSR and what the check needs."""

    shape: str
    num_users: int
    num_items: int
    user: np.ndarray  # (U, D) float32
    item: np.ndarray  # (I, D) float32
    seen: sp.csr_matrix  # (U, I), sorted indices
    sample: np.ndarray  # (S,) user indices kept for the check
    users: IdMap
    items: IdMap

    @property
    def pairs(self) -> int:
        return self.num_users * self.num_items


@dataclass
class Result:
    method: str
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    peak_mb: float = 0.0
    lists: dict[int, np.ndarray] | None = None  # sampled user -> item indices, best first
    note: str = ""  # why it was skipped
    setting: str = ""  # the tuned setting it ran with

    @property
    def best(self) -> float:
        return min(self.seconds) if self.seconds else float("nan")


def make_factors(
    rng: np.random.Generator, num_users: int, num_items: int, dim: int, shape: str
) -> tuple[np.ndarray, np.ndarray]:
    """(U, D) and (I, D) float32 factors of the given shape (see the module docstring)."""
    if shape == "random":
        user = rng.standard_normal((num_users, dim), dtype=np.float32)
        item = rng.standard_normal((num_items, dim), dtype=np.float32)
        return user / np.float32(np.sqrt(dim)), item / np.float32(np.sqrt(dim))
    if shape == "popularity":
        direction = rng.standard_normal(dim).astype(np.float32)
        direction /= np.linalg.norm(direction)
        rank = rng.permutation(num_items) + 1  # hidden popularity rank, ids shuffled
        norm = (rank / num_items) ** -0.3  # Zipf-like: the top item ~ I^0.3 x the last
        item = rng.standard_normal((num_items, dim), dtype=np.float32) / np.float32(np.sqrt(dim))
        item += 0.5 * direction
        item *= (norm / np.linalg.norm(item, axis=1))[:, None].astype(np.float32)
        user = rng.standard_normal((num_users, dim), dtype=np.float32) / np.float32(np.sqrt(dim))
        user += np.abs(rng.normal(1.0, 0.5, (num_users, 1))).astype(np.float32) * direction
        return user, item
    if shape == "ties":
        values = np.array([-0.25, 0.0, 0.0, 0.25], np.float32)  # sums of these are exact
        return values[rng.integers(0, 4, (num_users, dim))], values[
            rng.integers(0, 4, (num_items, dim))
        ]
    raise ValueError(f"unknown shape {shape!r} (expected one of: {', '.join(SHAPES)})")


def make_case(
    num_users: int, num_items: int, dim: int, seen_per_user: int, seed: int, shape: str = "random"
) -> Case:
    rng = np.random.default_rng(seed)
    user, item = make_factors(rng, num_users, num_items, dim, shape)
    lengths = np.minimum(rng.poisson(seen_per_user, num_users), num_items)
    rows = np.repeat(np.arange(num_users), lengths)
    # Skewed like real histories (popular items seen more), mild enough that few draws repeat.
    weights = 1.0 / np.sqrt(np.arange(1, num_items + 1))
    cols = rng.permutation(num_items)[rng.choice(num_items, len(rows), p=weights / weights.sum())]
    seen = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(num_users, num_items)
    )
    seen.sum_duplicates()
    seen.sort_indices()
    sample = np.unique(np.linspace(0, num_users - 1, min(SAMPLE_USERS, num_users)).astype(int))
    users = IdMap.from_list(list(range(10_000, 10_000 + num_users)))
    items = IdMap.from_list(list(range(500_000, 500_000 + num_items)))
    return Case(shape, num_users, num_items, user, item, seen, sample, users, items)


class PeakMemory:
    """Largest RSS above the starting one while the block runs (10 ms sampling)."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = 0

    def __enter__(self) -> PeakMemory:
        self.device_mb = 0.0
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.device_base = torch.cuda.memory_allocated()
        self.base = self.process.memory_info().rss
        self.peak = self.base
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            self.device_mb = (torch.cuda.max_memory_allocated() - self.device_base) / 2**20

    @property
    def mb(self) -> float:
        return (self.peak - self.base) / 2**20


# ------------------------------------------------------------------------------- methods


def ours(
    case: Case,
    device: torch.device,
    dtype: torch.dtype,
    n: int,
    users: int = 0,
    budget: int = 0,
    workers: int = 0,
):
    """The nightly path: top_n chunks -> Arrow batches with raw IDs (topn_batch)."""
    user = torch.from_numpy(case.user).to(device)
    item = torch.from_numpy(case.item).to(device)
    scorer = FactorScorer(user, item, dtype)
    seen = SeenMatrix(case.seen.indptr.astype(np.int64), case.seen.indices.astype(np.int32))
    queries = np.arange(users or case.num_users, dtype=np.int64)
    kept: dict[int, np.ndarray] = {}
    wanted = set(case.sample.tolist())
    chunks = top_n(scorer, n, seen, queries, device, budget, what="bench", workers=workers)
    for chunk in chunks:
        topn_batch(chunk, case.users, case.items, ("user_id", "item_id"),
                   np.full(len(chunk.query_idx), MODEL, np.int8))  # fmt: skip
        for row, q in enumerate(chunk.query_idx):
            if int(q) in wanted:
                kept[int(q)] = chunk.key_idx[row, : chunk.counts[row]].astype(np.int64)
    return kept


def ours_to_duckdb(case: Case, device: torch.device, dtype: torch.dtype, n: int, path: Path):
    """Score and write into a staged DuckDB file, as nightly does (writer thread, Arrow)."""
    scorer = FactorScorer(
        torch.from_numpy(case.user).to(device), torch.from_numpy(case.item).to(device), dtype
    )
    seen = SeenMatrix(case.seen.indptr.astype(np.int64), case.seen.indices.astype(np.int32))
    path.unlink(missing_ok=True)
    staged = StagedDatabase(path, "BIGINT", "BIGINT", "bench")
    chunks = top_n(scorer, n, seen, device=device, what="bench")
    rows = staged.write_batches(
        "recommendations",
        (topn_batch(c, case.users, case.items, ("user_id", "item_id"),
                    np.full(len(c.query_idx), MODEL, np.int8)) for c in chunks),
    )  # fmt: skip
    staged.close()
    path.unlink(missing_ok=True)
    return rows


def implicit_recommend(case: Case, n: int, threads: int, blas_threads: int):
    """implicit's batched recommend; `threads` is its own pool (0 = every core)."""
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(factors=case.user.shape[1], num_threads=threads)
    model.user_factors, model.item_factors = case.user, case.item
    with threadpool_limits(blas_threads, user_api="blas"):
        ids, _ = model.recommend(
            np.arange(case.num_users), case.seen, N=n, filter_already_liked_items=True
        )
    return {int(u): _valid(ids[u]) for u in case.sample}


def faiss_search(case: Case, n: int, threads: int, chunk: int = 16_384):
    """`IndexFlatIP.search` per chunk of users for N + the chunk's most seen items, then each
    row's seen items dropped (a sorted-key lookup) and the first N unseen kept."""
    import faiss

    faiss.omp_set_num_threads(threads)
    index = faiss.IndexFlatIP(case.user.shape[1])
    index.add(case.item)
    lengths = np.diff(case.seen.indptr)
    kept: dict[int, np.ndarray] = {}
    wanted = case.sample
    for start in range(0, case.num_users, chunk):
        stop = min(start + chunk, case.num_users)
        depth = min(n + int(lengths[start:stop].max(initial=0)), case.num_items)
        _, ids = index.search(case.user[start:stop], depth)  # (B, depth)
        block = case.seen[start:stop]
        # (row, item) keys; the chunk's seen keys are sorted (CSR rows, sorted indices)
        seen_keys = np.repeat(np.arange(stop - start, dtype=np.int64), np.diff(block.indptr))
        seen_keys = seen_keys * case.num_items + block.indices
        keys = np.arange(stop - start, dtype=np.int64)[:, None] * case.num_items + ids
        at = np.minimum(np.searchsorted(seen_keys, keys), max(len(seen_keys) - 1, 0))
        drop = (ids < 0) | (seen_keys[at] == keys if len(seen_keys) else False)
        order = np.argsort(drop, axis=1, kind="stable")[:, :n]  # unseen first, rank kept
        top = np.take_along_axis(ids, order, axis=1)
        top[np.take_along_axis(drop, order, axis=1)] = -1
        for u in wanted[(wanted >= start) & (wanted < stop)]:
            kept[int(u)] = _valid(top[u - start])
    return kept


def numpy_argpartition(case: Case, n: int, rows_per_chunk: int):
    """sgemm per chunk (numpy's BLAS threads), -inf on seen, argpartition, sort the N."""
    item_t = np.ascontiguousarray(case.item.T)
    kept: dict[int, np.ndarray] = {}
    wanted = set(case.sample.tolist())
    k = min(n, case.num_items)
    for start in range(0, case.num_users, rows_per_chunk):
        stop = min(start + rows_per_chunk, case.num_users)
        scores = case.user[start:stop] @ item_t  # (B, I)
        block = case.seen[start:stop]
        local = np.repeat(np.arange(stop - start), np.diff(block.indptr))
        scores.reshape(-1)[local * case.num_items + block.indices] = -np.inf
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        values = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-values, axis=1, kind="stable")
        top = np.take_along_axis(part, order, axis=1)
        top[np.take_along_axis(values, order, axis=1) == -np.inf] = -1
        for q in range(start, stop):
            if q in wanted:
                kept[q] = _valid(top[q - start])
    return kept


def bare_matmul(
    case: Case, device: torch.device, dtype: torch.dtype, rows_per_chunk: int, workers: int
) -> None:
    """The floor: chunked products, nothing else. workers > 1: one thread per worker, each
    with one intra-op thread (the engine's layout); 1: torch's own thread team."""
    user = torch.from_numpy(case.user).to(device, dtype)
    key_t = torch.from_numpy(case.item).to(device, dtype).T.contiguous()
    starts = list(range(0, case.num_users, rows_per_chunk))

    def work(share: list[int]) -> None:
        if workers > 1:
            torch.set_num_threads(1)
        out = torch.empty((rows_per_chunk, case.num_items), dtype=dtype, device=device)
        with torch.no_grad():
            for start in share:
                query = user[start : start + rows_per_chunk]
                torch.mm(query, key_t, out=out[: len(query)])  # (B, I)

    threads_before = torch.get_num_threads()
    pool = [threading.Thread(target=work, args=(starts[i::workers],)) for i in range(workers)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    torch.set_num_threads(threads_before)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _valid(ids: np.ndarray) -> np.ndarray:
    return ids[ids >= 0].astype(np.int64)


# ----------------------------------------------------------------------------- checking


def check(case: Case, lists: dict[int, np.ndarray] | None, n: int) -> str:
    """'ok' when every sampled user's list is a true top-N (up to ties), else what differs."""
    if lists is None:
        return "-"
    users = case.sample
    scores = case.user[users].astype(np.float64) @ case.item.T.astype(np.float64)  # (S, I)
    bad = 0
    for row, u in enumerate(users):
        s = scores[row]
        s[case.seen.indices[case.seen.indptr[u] : case.seen.indptr[u + 1]]] = -np.inf
        unseen = int(np.isfinite(s).sum())
        want = min(n, unseen)
        got = lists.get(int(u))
        if got is None or len(got) != want or len(set(got.tolist())) != want:
            bad += 1
            continue
        if want == 0:
            continue
        kth = np.partition(s, len(s) - want)[len(s) - want]
        tol = 1e-4 * max(abs(kth), 1e-3)
        if not np.all(s[got] >= kth - tol):
            bad += 1
    return "ok" if bad == 0 else f"{bad}/{len(users)} users differ"


# ------------------------------------------------------------------------------ running


def timed(fn: Callable[[], object]) -> tuple[float, float, float, object]:
    """Wall seconds, process CPU seconds, peak MiB (host RSS, plus device memory on CUDA)
    and what `fn` returned."""
    with PeakMemory() as memory:
        start, cpu = time.perf_counter(), time.process_time()
        value = fn()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return seconds, cpu, memory.mb + memory.device_mb, value


Method = Callable[["Case"], object]


def settings(args: argparse.Namespace, device: torch.device) -> dict[str, dict[str, Method]]:
    """Each method's candidate settings (name -> run on a case); the probe picks one each."""
    n, threads = args.n, args.threads
    low = DTYPES[_low(args)]
    if device.type == "cpu" and low == torch.float16:
        low = torch.bfloat16  # what the engine runs float16 as on CPU
    low_name = str(low).removeprefix("torch.")
    every = {t: f"{t} thread{'s' if t > 1 else ''}" for t in sorted({1, threads})}
    default = _default_dtype(device)
    engines = {f"{OURS} (default: {_dtype_name(default)})": default}
    second = torch.float32 if default != torch.float32 else low
    engines[f"{OURS} ({_dtype_name(second)})"] = second
    return {
        **{
            name: {"": lambda c, dtype=dtype: ours(c, device, dtype, n)}
            for name, dtype in engines.items()
        },
        "implicit recommend": {
            f"implicit {every[t]}, BLAS {every[b]}": (
                lambda c, t=t, b=b: implicit_recommend(c, n, t, b)
            )
            for t, b in {(threads, 1), (1, threads), (1, 1)}
        },
        "faiss IndexFlatIP": {
            f"{every[t]}, chunks of {chunk:,}": (
                lambda c, t=t, chunk=chunk: faiss_search(c, n, t, chunk)
            )
            for t in every
            for chunk in (4_096, 16_384)
        },
        "numpy argpartition": {
            f"chunks of {rows:,}": lambda c, rows=rows: numpy_argpartition(c, n, rows)
            for rows in (256, 1_024, 4_096)
        },
        FLOOR: {
            f"engine's blocks, {threads} worker(s)": lambda c: bare_matmul(
                c, device, torch.float32, _block_rows(c, device, torch.float32), threads
            ),
            f"64-user products, {threads} worker(s)": lambda c: bare_matmul(
                c, device, torch.float32, 64, threads
            ),
            "1,024-user products, torch's threads": lambda c: bare_matmul(
                c, device, torch.float32, 1024, 1
            ),
        },
        f"bare {low_name} GEMM": {
            "engine's blocks": lambda c: bare_matmul(
                c, device, low, _block_rows(c, device, low), threads
            )
        },
    }


def run_case(case: Case, args: argparse.Namespace, device: torch.device) -> tuple[list[str], dict]:
    """One size and shape: tune each peer on a slice, then time everything in rounds."""
    n = args.n
    candidates = settings(args, device)
    results = {name: Result(name) for name in candidates}
    chosen: dict[str, Method] = {}
    probe = max(1, min(case.num_users, int(args.probe_pairs // case.num_items)))
    small = _subset(case, probe)
    for name, options in candidates.items():
        best = (float("inf"), "")
        for label, fn in options.items():
            seconds, _, _, _ = timed(lambda fn=fn: fn(small))
            if len(options) > 1:
                print(f"  probe {name} [{label}]: {seconds:.3f} s", file=sys.stderr, flush=True)
            best = min(best, (seconds, label))
        seconds, label = best
        chosen[name] = options[label]
        results[name].setting = label
        estimate = seconds * case.num_users / probe
        if estimate > args.max_minutes * 60:
            results[
                name
            ].note = f"skipped: estimated {estimate / 60:.1f} min > {args.max_minutes:g} min"
    rounds = args.rounds if case.pairs <= args.multi_round_pairs else 1
    for round_ in range(rounds):  # interleaved: every method once per round
        for name, fn in chosen.items():
            result = results[name]
            if result.note:
                continue
            seconds, cpu, mb, value = timed(lambda fn=fn: fn(case))
            result.seconds.append(seconds)
            result.cpu.append(cpu)
            result.peak_mb = max(result.peak_mb, mb)
            if isinstance(value, dict):
                result.lists = value
            print(f"  round {round_ + 1} {case.shape} {name}: {seconds:.2f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
    engines = [name for name in results if name.startswith(OURS)]
    ours_s = results[engines[0]].best
    lines = [
        f"\n#### {case.shape}: {case.num_users:,} users x {case.num_items:,} items, "
        f"d={case.user.shape[1]}, top-{n}, {case.seen.nnz / case.num_users:.1f} seen per user "
        f"({case.pairs / 1e9:.2f} G pairs; best of {rounds} round(s); load average after: "
        f"{_load()})\n",
        "| method (tuned setting) | seconds (best; each round) | CPU s | M pairs/s | "
        "time / this project's default | peak MiB | top-N check |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    checks = {}
    for name, r in results.items():
        label = f"{name} ({r.setting})" if r.setting else name
        if r.note:
            lines.append(f"| {label} | {r.note} | | | | | |")
            continue
        rounds_text = "/".join(f"{s:.2f}" for s in r.seconds)
        checks[name] = check(case, r.lists, n) if r.lists is not None else "-"
        lines.append(
            f"| {label} | {r.best:.2f} ({rounds_text}) | {min(r.cpu):.2f} | "
            f"{case.pairs / r.best / 1e6:,.1f} | {r.best / ours_s:.2f}x | {r.peak_mb:,.0f} | "
            f"{checks[name]} |"
        )
    peers = {m: results[m].best for m in PEERS if results[m].seconds}
    fastest = min(peers, key=peers.get) if peers else ""
    floor = results[FLOOR].best if results[FLOOR].seconds else float("nan")
    summary = {
        "shape": case.shape,
        "size": f"{case.num_users:,} x {case.num_items:,}",
        "fastest": fastest,
        "fastest_rate": case.pairs / peers[fastest] / 1e6 if fastest else float("nan"),
        "checks": all(v in ("ok", "-") for v in checks.values()),
        "engines": [],
    }
    lines.append("")
    for name in engines:
        seconds = results[name].best
        vs_peer = peers[fastest] / seconds if fastest else float("nan")
        summary["engines"].append((case.pairs / seconds / 1e6, vs_peer, seconds / floor))
        if fastest:
            lines.append(
                f"- {name}: **{vs_peer:.2f}x** the throughput of the fastest peer "
                f"({fastest}, {results[fastest].setting})"
            )
        if results[FLOOR].seconds:
            lines.append(
                f"- {name}: **{seconds / floor:.2f}x** the time of the {FLOOR} "
                f"({results[FLOOR].setting})"
            )
    return lines, summary


def summary_table(rows: list[dict], names: list[str]) -> list[str]:
    """One line per size and shape: each engine variant against the fastest peer and the
    bare fp32 GEMM (wall clock, same run)."""
    head = " | ".join(f"{name}: M pairs/s, x the fastest peer, time / bare fp32 GEMM"
                      for name in names)  # fmt: skip
    lines = [
        "\n### Summary: this project against the fastest peer and the bare fp32 GEMM\n",
        f"| size | shape | fastest peer (M pairs/s) | {head} | every list exact |",
        "| --- | --- | --- |" + " ---: |" * len(names) + " --- |",
    ]
    for r in rows:
        engines = " | ".join(
            f"{rate:,.1f}, **{vs_peer:.2f}x**, **{vs_gemm:.2f}x**"
            for rate, vs_peer, vs_gemm in r["engines"]
        )
        lines.append(
            f"| {r['size']} | {r['shape']} | {r['fastest']} ({r['fastest_rate']:,.1f}) | "
            f"{engines} | {'yes' if r['checks'] else 'NO'} |"
        )
    return lines


def _default_dtype(device: torch.device) -> torch.dtype:
    """What `scoring.dtype = "auto"` (the default) runs on this device."""
    return scoring_dtype("auto") if device.type == "cpu" else torch.float32


def _dtype_name(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    return name if dtype == torch.float32 else f"{name} products + fp32 check"


def _block_rows(case: Case, device: torch.device, dtype: torch.dtype) -> int:
    """Users per matrix product in the engine: CPU chunks are scored in blocks."""
    rows = chunk_rows(case.num_items, device, 0)
    block = score.cpu_block_rows(case.num_items, dtype)
    return min(rows, block) if device.type == "cpu" else rows


def _low(args: argparse.Namespace) -> str:
    return "bfloat16" if args.dtype == "float32" else args.dtype


def _subset(case: Case, num_users: int) -> Case:
    return Case(
        case.shape,
        num_users,
        case.num_items,
        case.user[:num_users],
        case.item,
        case.seen[:num_users],
        case.sample[case.sample < num_users],
        case.users,
        case.items,
    )


def end_to_end(case: Case, args: argparse.Namespace, device: torch.device) -> list[str]:
    """Score + write into a staged DuckDB file vs scoring alone (same run, interleaved)."""
    e2e, alone = [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "staged.duckdb"
        for _ in range(args.rounds):
            seconds, _, _, _ = timed(lambda: ours(case, device, _default_dtype(device), args.n))
            alone.append(seconds)
            seconds, _, mb, rows = timed(
                lambda: ours_to_duckdb(case, device, _default_dtype(device), args.n, path)
            )
            e2e.append(seconds)
    ratio = min(e2e) / min(alone)
    return [
        f"- end to end (score + write {rows:,} rows into a staged DuckDB file, "
        f"{_dtype_name(_default_dtype(device))}, "
        f"{case.shape} factors): {min(e2e):.2f} s vs scoring alone {min(alone):.2f} s in the "
        f"same run: **{ratio:.2f}x** (rounds: {'/'.join(f'{s:.2f}' for s in e2e)} vs "
        f"{'/'.join(f'{s:.2f}' for s in alone)}; peak {mb:,.0f} MiB)"
    ]


def memory_scaling(case: Case, args: argparse.Namespace, device: torch.device) -> list[str]:
    """Peak memory of the engine for U and 2U users at the same catalogue."""
    double = Case(
        case.shape,
        2 * case.num_users,
        case.num_items,
        np.concatenate([case.user, case.user]),
        case.item,
        sp.vstack([case.seen, case.seen]).tocsr(),
        case.sample,
        IdMap.from_list(list(range(10_000, 10_000 + 2 * case.num_users))),
        case.items,
    )
    peaks = []
    for c in (case, double):
        _, _, mb, _ = timed(lambda c=c: ours(c, device, _default_dtype(device), args.n))
        peaks.append(mb)
    return [
        f"- memory: the engine's peak above its start is {peaks[0]:,.0f} MiB for "
        f"{case.num_users:,} users and {peaks[1]:,.0f} MiB for {2 * case.num_users:,} users "
        f"x {case.num_items:,} items (chunks of {chunk_rows(case.num_items, device, 0)} users "
        f"in blocks of {_block_rows(case, device, _default_dtype(device))}; results streamed, "
        "not kept)"
    ]


def ablations(case: Case, args: argparse.Namespace, device: torch.device) -> list[str]:
    """The engine with one choice undone at a time, interleaved, same data."""
    n = args.n
    rows = chunk_rows(case.num_items, device, 0)
    default = _default_dtype(device)
    other = torch.float32 if default != torch.float32 else torch.bfloat16

    def torch_selection():
        with _patched(score, "kernel_available", lambda: False):
            return ours(case, device, default, n)

    def fresh_blocks():
        original = FactorScorer.score_block
        with _patched(FactorScorer, "score_block", lambda self, r, out=None: original(self, r)):
            return ours(case, device, default, n)

    def blocks_of_64():
        with _patched(score, "cpu_block_rows", lambda num_keys, dtype: 64):
            return ours(case, device, default, n)

    shipped = (
        f"as shipped ({_dtype_name(default)}, {rows} users per chunk in blocks of "
        f"{_block_rows(case, device, default)}, {args.threads} workers)"
    )
    variants: dict[str, Callable[[], object]] = {
        shipped: lambda: ours(case, device, default, n),
        "torch selection (select_top_k_torch) instead of the compiled kernel": torch_selection,
        "a fresh score block per chunk (no out= buffer)": fresh_blocks,
        f"one worker, torch intra-op team of {args.threads} threads": lambda: ours(
            case, device, default, n, workers=1
        ),
        "blocks of 64 users whatever the dtype and catalogue": (blocks_of_64),
        "chunks of 64 users (one block per worker task)": lambda: ours(
            case, device, default, n, budget=64 * case.num_items * BYTES_PER_SCORE
        ),
        _dtype_name(other): lambda: ours(case, device, other, n),
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    timed(lambda: ours(_subset(case, min(case.num_users, 2000)), device, default, n))  # warm
    names = list(variants)
    for round_ in range(args.ablation_rounds):
        # rotate the order so no variant always runs first (the load drifts within a round)
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            elapsed, _, _, _ = timed(variants[name])
            seconds[name].append(elapsed)
            print(f"  ablation {name}: {elapsed:.2f} s", file=sys.stderr, flush=True)
    shipped = float(np.median(seconds[names[0]]))
    lines = [
        f"\n### Ablations: {case.num_users:,} users x {case.num_items:,} items, {case.shape} "
        f"factors, top-{n} ({args.ablation_rounds} interleaved rounds, order rotated; load "
        f"average after: {_load()})\n",
        "| engine variant | median s | best s | each round (s) | time / as shipped (medians) |",
        "| --- | ---: | ---: | --- | ---: |",
    ]
    for name, times in seconds.items():
        each = "/".join(f"{t:.2f}" for t in times)
        median = float(np.median(times))
        lines.append(
            f"| {name} | {median:.2f} | {min(times):.2f} | {each} | {median / shipped:.2f}x |"
        )
    return lines


@contextlib.contextmanager
def _patched(owner: object, name: str, value: object) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in text.split(","):
        users, _, items = part.strip().lower().partition("x")
        sizes.append((int(users.replace("_", "")), int(items.replace("_", ""))))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="943x1682,100000x20000,200000x50000")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seen", type=int, default=50, help="mean seen items per user")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--multi-round-pairs", type=float, default=4e9)
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-minutes", type=float, default=10.0)
    parser.add_argument("--probe-pairs", type=float, default=1e8)
    parser.add_argument("--end-to-end", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--end-to-end-pairs", type=float, default=2.5e9)
    parser.add_argument("--memory-check", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--memory-check-pairs", type=float, default=2.5e9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ablation-size", default="20000x20000", help="'' to skip")
    parser.add_argument("--ablation-rounds", type=int, default=5)
    args = parser.parse_args()
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for shape in shapes:
        if shape not in SHAPES:
            parser.error(f"--shapes: unknown shape {shape!r} (expected: {', '.join(SHAPES)})")

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # numpy's BLAS (implicit, the baseline) too
    device = resolve_device(args.device)
    print("# Scoring benchmark (benchmarks/bench_scoring.py)\n")
    print(f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.threads} thread(s) for every method; device for this project: {device}")  # fmt: skip
    import faiss
    import implicit

    print(f"- torch {torch.__version__}, numpy {np.__version__}, implicit {implicit.__version__}, "
          f"faiss {faiss.__version__}, python {platform.python_version()}")  # fmt: skip
    print(f"- selection: {'compiled kernel (recsys/_topk.c)' if kernel_available() else 'torch'}"
          f"; GPU figures: {'this run' if device.type == 'cuda' else 'not measured (no GPU)'}")  # fmt: skip
    print(f"- load average at start: {_load()}")
    summaries = []
    for num_users, num_items in parse_sizes(args.sizes):
        print(f"\n### {num_users:,} users x {num_items:,} items")
        for shape in shapes:
            case = make_case(num_users, num_items, args.dim, args.seen, args.seed, shape)
            print(f"scoring {num_users:,} x {num_items:,} {shape} ...", file=sys.stderr,
                  flush=True)  # fmt: skip
            lines, summary = run_case(case, args, device)
            summaries.append(summary)
            if shape == shapes[0]:
                if args.end_to_end and case.pairs <= args.end_to_end_pairs:
                    lines += end_to_end(case, args, device)
                if args.memory_check and case.pairs <= args.memory_check_pairs:
                    lines += memory_scaling(case, args, device)
            for line in lines:
                print(line, flush=True)
    names = [name for name in settings(args, device) if name.startswith(OURS)]
    for line in summary_table(summaries, names):
        print(line, flush=True)
    if args.ablation_size:
        ((num_users, num_items),) = parse_sizes(args.ablation_size)
        case = make_case(num_users, num_items, args.dim, args.seen, args.seed, shapes[0])
        print(f"ablations {num_users:,} x {num_items:,} ...", file=sys.stderr, flush=True)
        for line in ablations(case, args, device):
            print(line, flush=True)
    print(f"\n- load average at end: {_load()}")


if __name__ == "__main__":
    main()
