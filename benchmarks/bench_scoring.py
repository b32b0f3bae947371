"""All-users top-N with seen items excluded: this project's engine against implicit, faiss and
numpy, side by side in one process on the same factors and seen matrix (`make bench`).

Each method runs on the same synthetic factors and seen CSR, in interleaved rounds; the table
keeps each method's best round (the machine is shared: see the load average printed with it).
Timing is wall clock; "pairs/s" is users x items / seconds. Peak memory is the largest RSS
above the process's RSS before the run, sampled every 10 ms (plus CUDA's peak allocation). Results are checked against an
exact float64 top-N on sampled users: a method agrees when its items are the true top-N up to
ties (every item it returns scores within 1e-4 relative of the N-th best, and it returns
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

from recsys import score
from recsys.data.idmap import IdMap
from recsys.recommend import MODEL, topn_batch
from recsys.score import (
    BYTES_PER_SCORE,
    FactorScorer,
    SeenMatrix,
    chunk_rows,
    resolve_device,
    top_n,
)
from recsys.warehouse import StagedDatabase

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SAMPLE_USERS = 2000  # users whose lists are kept and checked against the float64 truth


@dataclass
class Case:
    """One size: factors, the seen CSR and what the check needs."""

    num_users: int
    num_items: int
    user: np.ndarray  # (U, D) float32
    item: np.ndarray  # (I, D) float32
    seen: sp.csr_matrix  # (U, I)
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
    peak_mb: float = 0.0
    lists: dict[int, np.ndarray] | None = None  # sampled user -> item indices, best first
    note: str = ""

    @property
    def best(self) -> float:
        return min(self.seconds) if self.seconds else float("nan")


def make_case(num_users: int, num_items: int, dim: int, seen_per_user: int, seed: int) -> Case:
    rng = np.random.default_rng(seed)
    # Trained factors are not isotropic: popular items get larger norms. A log-normal norm
    # spread keeps that (and makes the half-precision error bound work for its money).
    user = rng.standard_normal((num_users, dim), dtype=np.float32) / np.sqrt(dim)
    item = rng.standard_normal((num_items, dim), dtype=np.float32) / np.sqrt(dim)
    item *= rng.lognormal(0.0, 0.3, (num_items, 1)).astype(np.float32)
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
    return Case(num_users, num_items, user, item, seen, sample, users, items)


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


def implicit_recommend(case: Case, n: int, threads: int):
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(factors=case.user.shape[1], num_threads=threads)
    model.user_factors, model.item_factors = case.user, case.item
    ids, _ = model.recommend(
        np.arange(case.num_users), case.seen, N=n, filter_already_liked_items=True
    )
    return {int(u): _valid(ids[u]) for u in case.sample}


def faiss_search(case: Case, n: int, threads: int):
    import faiss

    faiss.omp_set_num_threads(threads)
    index = faiss.IndexFlatIP(case.user.shape[1])
    index.add(case.item)
    lengths = np.diff(case.seen.indptr)
    depth = min(n + int(lengths.max()), case.num_items)
    _, ids = index.search(case.user, depth)  # (U, N + max seen)
    # Drop seen items: each (user, item) key looked up in the sorted seen keys.
    keys = np.arange(case.num_users, dtype=np.int64)[:, None] * case.num_items + ids
    seen_keys = np.repeat(np.arange(case.num_users, dtype=np.int64), lengths) * case.num_items
    seen_keys += case.seen.indices
    drop = np.isin(keys, seen_keys, assume_unique=False) | (ids < 0)
    order = np.argsort(drop, axis=1, kind="stable")[:, :n]  # unseen first, rank kept
    top = np.take_along_axis(ids, order, axis=1)
    top[np.take_along_axis(drop, order, axis=1)] = -1
    return {int(u): _valid(top[u]) for u in case.sample}


def numpy_argpartition(case: Case, n: int):
    """Baseline: sgemm per chunk, -inf on seen, argpartition, sort the N."""
    rows_per_chunk = chunk_rows(case.num_items, torch.device("cpu"), 256 * 2**20)
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


def bare_matmul(case: Case, device: torch.device, dtype: torch.dtype, topk: int = 0) -> None:
    """The floor: the engine's chunked products (and optionally a dense topk), nothing else,
    with the engine's thread layout (CPU: one worker per thread, one intra-op thread each)."""
    rows_per_chunk = chunk_rows(case.num_items, device, 0)
    user = torch.from_numpy(case.user).to(device, dtype)
    key_t = torch.from_numpy(case.item).to(device, dtype).T.contiguous()
    workers = torch.get_num_threads() if device.type == "cpu" else 1
    starts = list(range(0, case.num_users, rows_per_chunk))

    def work(share: list[int]) -> None:
        if workers > 1:
            torch.set_num_threads(1)
        out = torch.empty((rows_per_chunk, case.num_items), dtype=dtype, device=device)
        with torch.no_grad():
            for start in share:
                query = user[start : start + rows_per_chunk]
                block = torch.mm(query, key_t, out=out[: len(query)])  # (B, I)
                if topk:
                    torch.topk(block, topk, dim=1)

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


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """Seconds, peak MiB (host RSS, plus device memory on CUDA) and what `fn` returned."""
    with PeakMemory() as memory:
        start = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - start
    return seconds, memory.mb + memory.device_mb, value


def run_size(case: Case, args: argparse.Namespace, device: torch.device) -> list[str]:
    n = args.n
    calls = _methods_for(case, args, device)
    methods = [name for name in calls if not name.startswith("bare")]
    ours_name, ours_low = methods[0], methods[1]
    results = {name: Result(name) for name in calls}
    # Calibrate on a slice of users: a method whose full run would take too long is skipped.
    probe = max(1, min(case.num_users, int(args.probe_pairs // case.num_items)))
    if probe < case.num_users:
        small = _methods_for(_subset(case, probe), args, device)
        for name in results:
            seconds, _, _ = timed(small[name])
            estimate = seconds * case.num_users / probe
            if estimate > args.max_minutes * 60:
                results[
                    name
                ].note = f"skipped: estimated {estimate / 60:.1f} min > {args.max_minutes:g} min"
    rounds = args.rounds if case.pairs <= args.multi_round_pairs else 1
    for round_ in range(rounds):  # interleaved: every method once per round
        for name, fn in calls.items():
            result = results[name]
            if result.note:
                continue
            seconds, mb, value = timed(fn)
            result.seconds.append(seconds)
            result.peak_mb = max(result.peak_mb, mb)
            if isinstance(value, dict):
                result.lists = value
            print(f"  round {round_ + 1} {name}: {seconds:.2f} s", file=sys.stderr, flush=True)
    ours_s = results[ours_name].best
    lines = [
        f"\n### {case.num_users:,} users x {case.num_items:,} items, d={case.user.shape[1]}, "
        f"top-{n}, {case.seen.nnz / case.num_users:.1f} seen per user "
        f"({case.pairs / 1e9:.2f} G pairs; best of {rounds} round(s); load average after: "
        f"{_load()})\n",
        "| method | seconds (best; each round) | M pairs/s | throughput / this project's "
        "float32 | peak MiB | top-N check |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, r in results.items():
        if r.note:
            lines.append(f"| {name} | {r.note} | | | | |")
            continue
        rounds_text = "/".join(f"{s:.2f}" for s in r.seconds)
        check_text = check(case, r.lists, n) if name in methods else "-"
        lines.append(
            f"| {name} | {r.best:.2f} ({rounds_text}) | {case.pairs / r.best / 1e6:,.1f} | "
            f"{ours_s / r.best:.2f}x | {r.peak_mb:,.0f} | {check_text} |"
        )
    lines.append("")
    peers = [results[m].best for m in ("implicit recommend", "faiss IndexFlatIP + drop seen")]
    peers = [s for s in peers if s == s]  # skipped ones are NaN
    for name, floor in ((ours_name, "bare matmul (float32)"),
                        (ours_low, f"bare matmul ({_low(args)})")):  # fmt: skip
        r = results[name]
        if not r.seconds:
            continue
        if peers:
            lines.append(
                f"- {name}: {min(peers) / r.best:.2f}x the throughput of the faster of "
                f"implicit and faiss"
            )
        if results[floor].seconds:
            lines.append(
                f"- {name}: the bare matrix product ({floor}) takes "
                f"{results[floor].best / r.best:.0%} of its time"
            )
        floor_topk = floor.replace("matmul", "matmul + dense topk")
        if results[floor_topk].seconds:
            lines.append(
                f"- {name}: {r.best / results[floor_topk].best:.2f}x the time of the bare "
                f"GEMM + dense topk floor ({floor_topk})"
            )
    if args.end_to_end and case.pairs <= args.end_to_end_pairs:
        lines += end_to_end(case, args, device)
    if args.memory_check and case.pairs <= args.memory_check_pairs:
        lines += memory_scaling(case, args, device)
    return lines


def _low(args: argparse.Namespace) -> str:
    return "bfloat16" if args.dtype == "float32" else args.dtype


def _methods_for(
    case: Case, args: argparse.Namespace, device: torch.device
) -> dict[str, Callable[[], object]]:
    n, threads = args.n, args.threads
    low = DTYPES[_low(args)]
    if device.type == "cpu" and low == torch.float16:
        low = torch.bfloat16  # what the engine runs float16 as on CPU
    low_name = str(low).removeprefix("torch.")
    return {
        f"this project ({device.type}, float32)": lambda: ours(case, device, torch.float32, n),
        f"this project ({device.type}, {low_name} + fp32 check)": lambda: ours(
            case, device, low, n
        ),
        "implicit recommend": lambda: implicit_recommend(case, n, threads),
        "faiss IndexFlatIP + drop seen": lambda: faiss_search(case, n, threads),
        "numpy argpartition": lambda: numpy_argpartition(case, n),
        "bare matmul (float32)": lambda: bare_matmul(case, device, torch.float32),
        "bare matmul + dense topk (float32)": lambda: bare_matmul(case, device, torch.float32, n),
        f"bare matmul ({low_name})": lambda: bare_matmul(case, device, low),
        f"bare matmul + dense topk ({low_name})": lambda: bare_matmul(case, device, low, n),
    }


def _subset(case: Case, num_users: int) -> Case:
    return Case(
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
            seconds, _, _ = timed(lambda: ours(case, device, torch.float32, args.n))
            alone.append(seconds)
            seconds, mb, rows = timed(
                lambda: ours_to_duckdb(case, device, torch.float32, args.n, path)
            )
            e2e.append(seconds)
    ratio = min(e2e) / min(alone)
    return [
        f"- end to end (score + write {rows:,} rows into a staged DuckDB file, float32): "
        f"{min(e2e):.2f} s vs scoring alone {min(alone):.2f} s in the same run: "
        f"{ratio:.2f}x (rounds: {'/'.join(f'{s:.2f}' for s in e2e)} vs "
        f"{'/'.join(f'{s:.2f}' for s in alone)}; peak {mb:,.0f} MiB)"
    ]


def memory_scaling(case: Case, args: argparse.Namespace, device: torch.device) -> list[str]:
    """Peak memory of the engine for U and 2U users at the same catalogue."""
    double = Case(
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
        _, mb, _ = timed(lambda c=c: ours(c, device, torch.float32, args.n))
        peaks.append(mb)
    return [
        f"- memory: the engine's peak above its start is {peaks[0]:,.0f} MiB for "
        f"{case.num_users:,} users and {peaks[1]:,.0f} MiB for {2 * case.num_users:,} users "
        f"x {case.num_items:,} items (chunk of {chunk_rows(case.num_items, device, 0)} users, "
        f"{BYTES_PER_SCORE} B/score budget; results streamed, not kept)"
    ]


def ablations(case: Case, args: argparse.Namespace, device: torch.device) -> list[str]:
    """The engine with one choice undone at a time, interleaved, same data."""
    n = args.n
    rows = chunk_rows(case.num_items, device, 0)

    def dense_topk():
        with _patched(score, "group_sizes", lambda num_keys, k: None):
            return ours(case, device, torch.float32, n)

    def fresh_blocks():
        original = FactorScorer.score_block
        with _patched(FactorScorer, "score_block", lambda self, r, out=None: original(self, r)):
            return ours(case, device, torch.float32, n)

    variants: dict[str, Callable[[], object]] = {
        f"as shipped (float32, {rows} users per chunk, {args.threads} workers)": lambda: ours(
            case, device, torch.float32, n
        ),
        "dense torch.topk instead of select_candidates": dense_topk,
        "a fresh score block per chunk (no out= buffer)": fresh_blocks,
        f"one worker, torch intra-op team of {args.threads} threads": lambda: ours(
            case, device, torch.float32, n, workers=1
        ),
        "64 users per chunk": lambda: ours(
            case, device, torch.float32, n, budget=64 * case.num_items * BYTES_PER_SCORE
        ),
        "1,024 users per chunk": lambda: ours(
            case, device, torch.float32, n, budget=1024 * case.num_items * BYTES_PER_SCORE
        ),
        "bfloat16 products + fp32 check": lambda: ours(case, device, torch.bfloat16, n),
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    timed(lambda: ours(_subset(case, min(case.num_users, 2000)), device, torch.float32, n))  # warm
    names = list(variants)
    for round_ in range(args.ablation_rounds):
        # rotate the order so no variant always runs first (the load drifts within a round)
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            elapsed, _, _ = timed(variants[name])
            seconds[name].append(elapsed)
            print(f"  ablation {name}: {elapsed:.2f} s", file=sys.stderr, flush=True)
    shipped = float(np.median(seconds[names[0]]))
    lines = [
        f"\n### Ablations: {case.num_users:,} users x {case.num_items:,} items, top-{n} "
        f"({args.ablation_rounds} interleaved rounds, order rotated; load average after: "
        f"{_load()})\n",
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

    torch.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)  # numpy's BLAS (implicit, the baseline) too
    except ImportError:
        pass
    device = resolve_device(args.device)
    print("# Scoring benchmark (benchmarks/bench_scoring.py)\n")
    print(f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.threads} thread(s) for every method; device for this project: {device}")  # fmt: skip
    import faiss
    import implicit

    print(f"- torch {torch.__version__}, numpy {np.__version__}, implicit {implicit.__version__}, "
          f"faiss {faiss.__version__}, python {platform.python_version()}")  # fmt: skip
    print(f"- load average at start: {_load()}")
    for num_users, num_items in parse_sizes(args.sizes):
        case = make_case(num_users, num_items, args.dim, args.seen, args.seed)
        print(f"scoring {num_users:,} x {num_items:,} ...", file=sys.stderr, flush=True)
        for line in run_size(case, args, device):
            print(line, flush=True)
    if args.ablation_size:
        ((num_users, num_items),) = parse_sizes(args.ablation_size)
        case = make_case(num_users, num_items, args.dim, args.seen, args.seed)
        print(f"ablations {num_users:,} x {num_items:,} ...", file=sys.stderr, flush=True)
        for line in ablations(case, args, device):
            print(line, flush=True)
    print(f"\n- load average at end: {_load()}")


if __name__ == "__main__":
    main()
