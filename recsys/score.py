"""The scoring engine: every query (user) against every key (item) in chunks, top-N on device.

Per chunk: one dense score block (B, I) into a reused buffer, then seen items excluded and the
exact top-N selected in one compiled pass per row on CPU (recsys/_topk.c), or in torch ops
(`select_top_k_torch`: the same lists, on CUDA or without the compiled kernel). The full
query x key matrix is never materialised.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recsys.errors import ConfigError
from recsys.models.base import Factors, Recommender
from recsys.progress import Progress

try:  # built by `make install` (setup.py); optional: the torch selection gives the same lists
    from recsys import _topk
except ImportError:
    _topk = None

log = logging.getLogger(__name__)

TOPK_ABI = 2  # the calling convention recsys/_topk.c implements (its TOPK_ABI)

DEFAULT_CPU_BUDGET = 256 * 2**20
GPU_BUDGET_FRACTION = 0.4
# Scratch bytes per score: the block itself plus the dense top-k fallback's working copies.
BYTES_PER_SCORE = 12
# CPU: a chunk of 256 queries per worker task, scored in blocks of about 10 MiB (64 to 256
# queries): the product fills a block, then the selection reads it back. Measured here
# (benchmarks/RESULTS.md): MKL's fp32 product with d = 64 is fastest at 64-128 queries and
# much slower at 256+ (20 MiB blocks spill the cache) or below 32; oneDNN's bf16 product
# wants 128-256; the chunk spreads each task's Python overhead over several blocks.
CPU_CHUNK_ROWS = 256
CPU_BLOCK_BYTES = 10 * 2**20


def cpu_block_rows(num_keys: int, dtype: torch.dtype) -> int:
    """Queries per product on CPU: a block of about CPU_BLOCK_BYTES, 64 to 256 queries."""
    rows = CPU_BLOCK_BYTES // (max(num_keys, 1) * torch.finfo(dtype).bits // 8)
    return max(64, min(256, rows))


NEG_INF = float("-inf")


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
CHOICES = ("auto", *DTYPES)


def scoring_dtype(name: str) -> torch.dtype:
    """The torch dtype of a `scoring.dtype` setting. `auto`: bfloat16 products (the lists
    and scores stay the exact fp32 ones: see FactorScorer) where the CPU multiplies bf16
    natively and no GPU is present, float32 otherwise (GPU figures are not measured yet)."""
    if name == "auto":
        return torch.bfloat16 if native_bf16() and not torch.cuda.is_available() else torch.float32
    if name not in DTYPES:
        raise ConfigError(f"scoring.dtype '{name}' unknown (expected one of: {', '.join(CHOICES)})")
    return DTYPES[name]


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AMX or AVX-512 BF16; Linux only)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        log.warning("device %s requested but CUDA is not available; using CPU", name)
        return torch.device("cpu")
    return device


def chunk_rows(
    num_keys: int,
    device: torch.device,
    budget_bytes: int = 0,
    bytes_per_score: int = BYTES_PER_SCORE,
) -> int:
    """Queries per chunk so that one chunk's scratch (`bytes_per_score` per query-key pair)
    fits `budget_bytes` (0 = automatic: a fraction of free device memory on CUDA,
    `CPU_CHUNK_ROWS` queries on CPU within `DEFAULT_CPU_BUDGET`)."""
    if budget_bytes <= 0:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            budget_bytes = int(free * GPU_BUDGET_FRACTION)
        else:
            rows = DEFAULT_CPU_BUDGET // (max(num_keys, 1) * bytes_per_score)
            return max(1, min(rows, CPU_CHUNK_ROWS))
    return max(1, budget_bytes // (max(num_keys, 1) * bytes_per_score))


@dataclass
class SeenMatrix:
    """CSR rows of keys to exclude per query: (indptr (Q+1,), indices (nnz,))."""

    indptr: np.ndarray
    indices: np.ndarray

    @classmethod
    def identity(cls, n: int) -> SeenMatrix:
        """Each query excludes the key with its own index (similar items: not itself)."""
        return cls(np.arange(n + 1, dtype=np.int64), np.arange(n, dtype=np.int32))

    @classmethod
    def empty(cls, n: int) -> SeenMatrix:
        return cls(np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int32))


@dataclass
class TopN:
    """One chunk's result. Row r lists `counts[r]` valid keys, best first."""

    query_idx: np.ndarray  # (B,) int64
    key_idx: np.ndarray  # (B, N) int32
    score: np.ndarray  # (B, N) float32
    counts: np.ndarray  # (B,) int64


class BlockScorer:
    """Scores a block of queries against every key: rows (B,) -> (B, num_keys) float32."""

    num_queries: int
    num_keys: int
    bytes_per_score: int = BYTES_PER_SCORE
    # True when `score_block` returns rounded scores that `rescore` must check (FactorScorer
    # in half precision); `error_bound` then says by how much they may be off.
    approximate: bool = False

    def score(self, rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score_block(self, rows: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The block the selection runs on (B, num_keys), written into `out` when given."""
        return self.score(rows)

    def block_dtype(self) -> torch.dtype:
        return torch.float32


# Unit roundoff: the largest relative error of rounding to nearest.
_ROUNDOFF = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
_FINITE_MAX = {torch.bfloat16: torch.finfo(torch.bfloat16).max, torch.float16: 65504.0}


class FactorScorer(BlockScorer):
    """scores = query[rows] @ key.T, optionally in half precision with fp32 accumulation.

    In half precision (`dtype` bfloat16, or float16 on CUDA) the block is approximate; every
    score is within `error_bound(rows)` of the fp32 one (a rounding-error bound, below), so
    the selection keeps every key that could be in the exact top-N (`certified_cut`) and
    rescores those few in fp32 from the factors (`rescore_torch`, or the compiled kernel's
    same steps). The result is the fp32 top-N, not an approximation of it.
    """

    def __init__(
        self, query: torch.Tensor, key: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> None:
        self.num_queries, self.num_keys = query.shape[0], key.shape[0]
        self.query32 = query.detach().float().contiguous()  # (Q, D)
        self.key32 = key.detach().float().contiguous()  # (K, D)
        self.dtype = _usable_dtype(dtype, self.query32, self.key32)
        self.approximate = self.dtype != torch.float32
        self.query = self.query32 if not self.approximate else self.query32.to(self.dtype)
        self.key_t = self.key32.to(self.dtype).T.contiguous()  # (D, K)
        # CUDA can keep fp32 outputs from half inputs (fp32 accumulation guaranteed); CPU
        # writes the block in the input dtype (oneDNN accumulates in fp32, then rounds once).
        self._fp32_out = self.approximate and self.query.is_cuda and _has_out_dtype(self.query)
        if self.approximate:
            # Without fp32 outputs, cuBLAS may also reduce in half precision.
            accumulate = self.dtype if self.query.is_cuda and not self._fp32_out else None
            self._bound = _error_bound(self.query32, self.key32, self.dtype, accumulate)  # (Q,)

    def score(self, rows: torch.Tensor) -> torch.Tensor:
        block = self.score_block(rows)
        return block if block.dtype == torch.float32 else block.float()

    def score_block(self, rows: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        query = self.query[rows]  # (B, D)
        if self._fp32_out:
            return torch.mm(query, self.key_t, out_dtype=torch.float32)  # (B, K)
        if out is None:
            return query @ self.key_t  # (B, K)
        return torch.mm(query, self.key_t, out=out)  # (B, K)

    def block_dtype(self) -> torch.dtype:
        return torch.float32 if self._fp32_out or not self.approximate else self.dtype

    def score_exact(self, rows: torch.Tensor) -> torch.Tensor:
        """fp32 scores (B, K) for rows whose candidates could not be narrowed down."""
        return self.query32[rows] @ self.key32.T

    def error_bound(self, rows: torch.Tensor) -> torch.Tensor:
        """(B,) absolute bound on |block score - fp32 score|, before the block's own rounding."""
        return self._bound[rows]

    def output_roundoff(self) -> float:
        """Relative rounding of the block's values (0 when the block is fp32)."""
        return _ROUNDOFF[self.dtype] if self.block_dtype() != torch.float32 else 0.0


def _error_bound(
    query: torch.Tensor,
    key: torch.Tensor,
    dtype: torch.dtype,
    accumulate: torch.dtype | None = None,
) -> torch.Tensor:
    """Per query (Q,): a bound on |half-precision block score - fp32 score| for every key.

    With q~ = q - dq and k~ = k - dk the rounded factors (dq, dk exact in fp32, underflow
    included): q.k - q~.k~ = dq.k~ + q~.dk + dq.dk, bounded by Cauchy-Schwarz with the
    largest key norms; the fp32 sums of the block and of the rescoring (and the reference)
    each add at most gamma_D sum|q_d k_d| <= gamma_D |q| |k|. The block's own final rounding
    is accounted for in `certified_cut`. Inflated by 1% for this computation's rounding.
    `accumulate`: the block's summation precision when it may not be fp32.
    """
    dim = query.shape[1]
    gamma = dim * 2.0**-24 / (1 - dim * 2.0**-24)
    u_sum = _ROUNDOFF[accumulate] if accumulate is not None else 2.0**-24
    gamma_block = dim * u_sum / (1 - dim * u_sum)
    q_low, k_low = query.to(dtype).float(), key.to(dtype).float()
    dq, dk = (query - q_low).norm(dim=1), (key - k_low).norm(dim=1)  # (Q,), (K,)
    if key.shape[0] == 0:
        return torch.zeros(query.shape[0], device=query.device)
    k_norm, k_low_norm, dk_max = key.norm(dim=1).max(), k_low.norm(dim=1).max(), dk.max()
    bound = dq * k_low_norm + q_low.norm(dim=1) * dk_max + dq * dk_max
    bound += gamma_block * q_low.norm(dim=1) * k_low_norm + gamma * 2 * query.norm(dim=1) * k_norm
    return bound * 1.01 + 1e-30


def _usable_dtype(dtype: torch.dtype, query: torch.Tensor, key: torch.Tensor) -> torch.dtype:
    if dtype == torch.float32:
        return dtype
    if dtype not in _ROUNDOFF:
        raise ValueError(f"scoring dtype {dtype} unsupported (expected float32, bfloat16, float16)")
    if dtype == torch.float16 and not query.is_cuda:
        # CPUs have no fast fp16 GEMM (measured ~40x slower than fp32 here); bf16 has one.
        log.info("scoring: float16 on CPU runs as bfloat16 (no fast fp16 matrix product on CPU)")
        dtype = torch.bfloat16
    largest = max(float(query.abs().max()) if query.numel() else 0.0,
                  float(key.abs().max()) if key.numel() else 0.0)  # fmt: skip
    q_norm = float(query.norm(dim=1).max()) if query.numel() else 0.0
    k_norm = float(key.norm(dim=1).max()) if key.numel() else 0.0
    if not math.isfinite(largest) or max(largest, q_norm * k_norm) * 2 >= _FINITE_MAX[dtype]:
        log.warning("scoring: factors too large for %s (scores could overflow); using float32",
                    dtype)  # fmt: skip
        return torch.float32
    return dtype


def _has_out_dtype(tensor: torch.Tensor) -> bool:
    try:
        torch.mm(tensor[:1], tensor[:1].T, out_dtype=torch.float32)
    except (RuntimeError, TypeError, NotImplementedError):
        return False
    return True


class ModelScorer(BlockScorer):
    """Scores through the model's own `score_block` (models without a linear form), or with
    `items_as_queries` through its `similar_items_block` (item-item models)."""

    def __init__(self, model: Recommender, items_as_queries: bool = False) -> None:
        self.model = model
        self.block = model.similar_items_block if items_as_queries else model.score_block
        self.num_queries = model.num_items if items_as_queries else model.num_users
        self.num_keys = model.num_items
        self.bytes_per_score = max(BYTES_PER_SCORE, model.bytes_per_score)

    @torch.no_grad()
    def score(self, rows: torch.Tensor) -> torch.Tensor:
        return self.block(rows).float()


def scorer_for(
    model: Recommender, device: torch.device, dtype: torch.dtype = torch.float32
) -> BlockScorer:
    """The cheapest full-scoring form the model offers, on `device`."""
    model = model.to(device).eval()
    with torch.no_grad():
        factors: Factors | None = model.factors()
    if factors is not None:
        return FactorScorer(factors.user, factors.item, dtype)
    return ModelScorer(model)


def similar_items_scorer(model: Recommender, device: torch.device) -> BlockScorer:
    """Items as queries: the item-item model's own matrix, else the cosine similarity of the
    model's item representations."""
    model = model.to(device).eval()
    if model.has_item_matrix:
        return ModelScorer(model, items_as_queries=True)
    with torch.no_grad():
        reps = model.item_representations().float()
        reps = torch.nn.functional.normalize(reps, dim=1)
    return FactorScorer(reps, reps)


def top_n(
    scorer: BlockScorer,
    n: int,
    seen: SeenMatrix | None = None,
    queries: np.ndarray | None = None,
    device: torch.device | None = None,
    budget_bytes: int = 0,
    what: str = "scoring",
    workers: int = 0,
    unit: str = "users",
) -> Iterator[TopN]:
    """Yield the top-`n` unseen keys for `queries` (default: all), chunk by chunk, in order.

    On CPU, chunks are scored by `workers` threads (0 = torch's intra-op thread count) with
    one intra-op thread each: torch's per-operation thread team waits on its slowest thread
    at every operation, which on a shared machine made scoring up to 10x slower than one
    thread; independent chunks keep each core busy. Memory: one block per worker.
    """
    device = device or torch.device("cpu")
    if queries is None:
        queries = np.arange(scorer.num_queries, dtype=np.int64)
    queries = np.asarray(queries, dtype=np.int64)
    k = min(n, scorer.num_keys)
    rows_per_chunk = chunk_rows(scorer.num_keys, device, budget_bytes, scorer.bytes_per_score)
    if device.type != "cpu":
        workers = 1
    workers = max(1, min(workers or torch.get_num_threads(), -(-len(queries) // rows_per_chunk)))
    scorer_chunk = _ChunkScorer(scorer, k, seen, device, min(rows_per_chunk, len(queries)))
    log.debug("%s: %d queries x %d keys, %d per chunk, %d worker(s), %s block on %s", what,
              len(queries), scorer.num_keys, rows_per_chunk, workers, scorer.block_dtype(),
              device)  # fmt: skip
    starts = range(0, len(queries), rows_per_chunk)
    blocks = (queries[start : start + rows_per_chunk] for start in starts)
    progress = Progress(len(queries), what, unit)  # queries are users, or items
    if workers == 1:
        for block in blocks:
            yield scorer_chunk(block)
            progress.update(len(block))
        progress.close()
        return
    main_threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="score")
    try:
        pending: deque[Future[TopN]] = deque()
        for block in blocks:  # at most 2 chunks per worker in flight: memory stays bounded
            pending.append(pool.submit(scorer_chunk, block, single_thread=True))
            if len(pending) >= 2 * workers:
                chunk = pending.popleft().result()
                yield chunk
                progress.update(len(chunk.query_idx))
        while pending:
            chunk = pending.popleft().result()
            yield chunk
            progress.update(len(chunk.query_idx))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(main_threads)  # workers lowered torch's default for new threads
    progress.close()


class _ChunkScorer:
    """One chunk's top-k on the host, callable from worker threads (a score block each)."""

    def __init__(
        self,
        scorer: BlockScorer,
        k: int,
        seen: SeenMatrix | None,
        device: torch.device,
        max_rows: int,
    ) -> None:
        self.scorer, self.k, self.device = scorer, k, device
        # CPU: each chunk in blocks (product, then selection, per block)
        block = cpu_block_rows(scorer.num_keys, scorer.block_dtype())
        self.block_rows = max_rows if device.type != "cpu" else min(max_rows, block)
        self.seen = _SeenOnDevice(seen, device, scorer.num_keys) if seen is not None else None
        self.local = threading.local()

    def __call__(self, block: np.ndarray, single_thread: bool = False) -> TopN:
        if not hasattr(self.local, "buffer"):
            if single_thread:
                torch.set_num_threads(1)  # this thread's intra-op team; see top_n
            # (B, K), reused: on CPU a fresh multi-MB block costs page faults on every chunk;
            # CUDA's caching allocator reuses blocks by itself.
            self.local.buffer = None
            if self.device.type == "cpu":
                self.local.buffer = torch.empty((self.block_rows, self.scorer.num_keys),
                                                dtype=self.scorer.block_dtype())  # fmt: skip
        buffer = self.local.buffer
        parts = []
        with torch.no_grad():
            for start in range(0, len(block), self.block_rows):
                queries = block[start : start + self.block_rows]
                rows = torch.from_numpy(queries).to(self.device)
                out = buffer[: len(queries)] if buffer is not None else None
                parts.append(_chunk_top_k(self.scorer, rows, queries, self.k, out, self.seen))
        if len(parts) == 1:
            values, keys, counts = parts[0]
        else:
            values, keys, counts = (np.concatenate(part) for part in zip(*parts, strict=True))
        return TopN(block, keys, values, counts)


def _chunk_top_k(
    scorer: BlockScorer,
    rows: torch.Tensor,
    block: np.ndarray,
    k: int,
    out: torch.Tensor | None,
    seen: _SeenOnDevice | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact top-k of one chunk on the host: values (B, k) fp32 best first, key indices
    (B, k) int32, counts (B,) int64."""
    approximate = isinstance(scorer, FactorScorer) and scorer.approximate
    scores = scorer.score_block(rows, out)  # (B, K)
    if not approximate:
        return select_top_k(scores, k, seen, block, rows)
    return select_certified(scorer, scores, k, seen, block, rows)


def kernel_available() -> bool:
    """Whether the compiled selection (recsys/_topk.c, built by `make install`) is loaded."""
    return _topk is not None and getattr(_topk, "ABI", None) == TOPK_ABI


_told_fallback = threading.Event()


def select_top_k(
    scores: torch.Tensor,
    k: int,
    seen: _SeenOnDevice | None,
    block: np.ndarray,
    rows: torch.Tensor,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's `k` best keys of a score block (B, K), seen keys of the row's query left
    out: values (B, k) fp32, key indices (B, k) int32, counts (B,) int64 (valid slots).

    Best first; NaN ranks above +inf, ties go to the lower key index, -inf scores (seen or
    blocked keys) are never listed. The block is scratch: seen keys are set to -inf in it.
    The compiled kernel on CPU, else `select_top_k_torch`; the lists are the same.
    """
    use_kernel = scores.device.type == "cpu" and scores.dtype == torch.float32
    if use_kernel and kernel_available():
        return _select_compiled(scores, k, seen, block)
    if use_kernel and not _told_fallback.is_set():
        _told_fallback.set()
        log.info("scoring: compiled top-k selection not built (make install builds it); "
                 "using the torch selection (same lists, slower)")  # fmt: skip
    if seen is not None:
        seen.mask_(scores, block, rows)
    values, keys, counts = select_top_k_torch(scores.float(), k)
    return values.cpu().numpy(), keys.to(torch.int32).cpu().numpy(), counts.cpu().numpy()


def _select_compiled(
    scores: torch.Tensor,
    k: int,
    seen: _SeenOnDevice | None,
    block: np.ndarray,
    certified: tuple[torch.Tensor, float, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The compiled kernel on a CPU block: exact mode, or with `certified` = (slack (B,),
    roundoff, query (B, D), key (K, D)) the certified mode of `select_certified`."""
    num_rows, num_keys = scores.shape
    scores = scores.contiguous()
    values = np.empty((num_rows, k), np.float32)
    keys = np.empty((num_rows, k), np.int32)
    counts = np.empty(num_rows, np.int64)
    queries = np.ascontiguousarray(block, np.int64)
    if seen is None:
        num_queries, indptr_at, indices_at = 0, 0, 0
    else:
        num_queries = len(seen.indptr_np) - 1
        indptr_at, indices_at = seen.indptr_np.ctypes.data, seen.indices_np.ctypes.data
    # the kernel reads and writes these addresses with the GIL released; every array and
    # tensor is held by a local name until it returns
    head = (scores.data_ptr(), num_rows, num_keys, num_keys, k, queries.ctypes.data,
            num_queries, indptr_at, indices_at)  # fmt: skip
    tail = (values.ctypes.data, keys.ctypes.data, counts.ctypes.data)
    if certified is None:
        _topk.select(*head, *tail)
        return values, keys, counts
    slack, roundoff, query, key = (
        certified[0].contiguous(),
        certified[1],
        certified[2].contiguous(),
        certified[3].contiguous(),
    )
    bf16 = int(scores.dtype == torch.bfloat16)
    _topk.select_certified(head[0], bf16, *head[1:], slack.data_ptr(), roundoff,
                           query.data_ptr(), key.data_ptr(), query.shape[1], *tail)  # fmt: skip
    return values, keys, counts


def select_top_k_torch(
    scores: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`select_top_k` in torch ops (any device), seen keys already -inf: values (B, k),
    key indices (B, k) int64, counts (B,). Empty slots: value -inf, key 0.

    torch.topk (NaN first) gives the right values; its keys are the kernel's wherever every
    key tied with the k-th value made the list (the usual case), once sorted by value and
    then key. Rows where ties at the k-th value cross the cut take `_select_ties`.
    """
    num_rows = scores.shape[0]
    if k == 0 or num_rows == 0:
        return _select_ties(scores, k)
    top, keys = torch.topk(scores, k, dim=1)  # (B, k)
    kth = top[:, k - 1 :]  # (B, 1)
    tied_in_row = (scores == kth).sum(dim=1)
    tied_in_top = (top == kth).sum(dim=1)
    # -inf at the cut: the slots past the count are emptied whichever -inf keys filled them;
    # NaN at the cut (k NaNs): never equal to itself, so left to _select_ties
    kth = kth.squeeze(1)
    crossing = ((tied_in_row != tied_in_top) & (kth != NEG_INF)) | kth.isnan()
    keys, order = torch.sort(keys, dim=1)  # by key, then (stable) by value: the kernel's order
    top, order = torch.sort(torch.gather(top, 1, order), dim=1, descending=True, stable=True)
    keys = torch.gather(keys, 1, order)
    if bool(crossing.any()):
        rows = torch.nonzero(crossing).squeeze(1)
        top[rows], keys[rows], _ = _select_ties(scores[rows], k)
    empty = top == NEG_INF
    return top, keys.masked_fill_(empty, 0), (~empty).sum(dim=1)


def _select_ties(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`select_top_k_torch` for rows whose ties at the k-th value cross the cut: the k-th
    best value v splits the row; every key above v is listed, and of the keys equal to v,
    the lowest-indexed ones that fill k; a stable sort of those by value gives the order."""
    num_rows, num_keys = scores.shape
    values = torch.full((num_rows, k), NEG_INF, device=scores.device)
    keys = torch.zeros((num_rows, k), dtype=torch.long, device=scores.device)
    if k == 0 or num_rows == 0:
        return values, keys, torch.zeros(num_rows, dtype=torch.long, device=scores.device)
    kth = torch.topk(scores, k, dim=1).values[:, k - 1 :]  # (B, 1); NaN ranks first
    nan, kth_nan = scores.isnan(), kth.isnan()
    above = (scores > kth) | (nan & ~kth_nan)  # (B, K)
    tied = (scores == kth) | (nan & kth_nan)
    wanted = k - above.sum(dim=1, keepdim=True)
    keep = above | (tied & (torch.cumsum(tied, dim=1, dtype=torch.int32) <= wanted))
    keep &= scores != NEG_INF
    counts = keep.sum(dim=1)  # (B,)
    rows, cols = torch.nonzero(keep, as_tuple=True)  # row-major: each row's keys ascending
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(rows.numel(), device=scores.device) - starts[rows]
    keys[rows, slot] = cols
    values[rows, slot] = scores[rows, cols]
    values, order = torch.sort(values, dim=1, descending=True, stable=True)
    return values, torch.gather(keys, 1, order), counts


def certified_cut(kth: torch.Tensor, slack: torch.Tensor, roundoff: float) -> torch.Tensor:
    """(B,) the lowest block score that can still reach the fp32 top-k, given each row's
    k-th block score (B,): k keys have block scores >= t, which stand for unrounded ones
    >= t - roundoff |t| / (1 - roundoff) and fp32 scores >= that - slack, so the fp32 k-th
    is too; a key can reach it only if its block score is >= that - 2 slack (rounding is
    monotone). The kernel takes the same fp32 steps."""
    return kth - roundoff * kth.abs() / (1 - roundoff) - 2 * slack


def rescore_torch(query: torch.Tensor, key: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """fp32 scores of the keys `cols` (B, C) for the queries (B, D), in the compiled kernel's
    order of operations (so both give the same bits): lane j of 16 sums q[i] * k[i] over
    i = j, j + 16, ... in order, then the lanes fold in halves (8, 4, 2, 1)."""
    num_rows, width = cols.shape
    dim = query.shape[1]
    vectors = key.index_select(0, cols.reshape(-1)).view(num_rows, width, dim)  # (B, C, D)
    lanes = torch.zeros((num_rows, width, 16), device=query.device)
    for start in range(0, dim, 16):
        stop = min(start + 16, dim)
        products = vectors[:, :, start:stop] * query[:, None, start:stop]  # (B, C, <=16)
        lanes[:, :, : stop - start] = lanes[:, :, : stop - start] + products
    for half in (8, 4, 2, 1):
        lanes = lanes[:, :, :half] + lanes[:, :, half : 2 * half]
    return lanes[:, :, 0]


def select_certified(
    scorer: FactorScorer,
    scores: torch.Tensor,
    k: int,
    seen: _SeenOnDevice | None,
    block: np.ndarray,
    rows: torch.Tensor,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`select_top_k` for a half-precision block: every key whose block score reaches the
    row's `certified_cut` is rescored in fp32 from the factors, and the k best of those are
    listed (their fp32 scores, in the order of `select_top_k`)."""
    slack = scorer.error_bound(rows).float()  # (B,)
    roundoff = scorer.output_roundoff()
    query = scorer.query32.index_select(0, rows)  # (B, D)
    usable = scores.dtype in (torch.float32, torch.bfloat16)
    if scores.device.type == "cpu" and usable and kernel_available():
        return _select_compiled(scores, k, seen, block, (slack, roundoff, query, scorer.key32))
    if seen is not None:
        seen.mask_(scores, block, rows)
    values, keys, counts = select_certified_torch(scores, k, slack, roundoff, query, scorer.key32)
    return values.cpu().numpy(), keys.to(torch.int32).cpu().numpy(), counts.cpu().numpy()


def select_certified_torch(
    scores: torch.Tensor,
    k: int,
    slack: torch.Tensor,
    roundoff: float,
    query: torch.Tensor,
    key: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`select_certified` in torch ops, seen keys already -inf: values (B, k), keys (B, k)
    int64, counts (B,)."""
    num_rows = scores.shape[0]
    values = scores.float()  # (B, K)
    if k == 0 or num_rows == 0:
        return select_top_k_torch(values, k)
    kth = torch.topk(values, k, dim=1).values[:, k - 1]  # (B,)
    candidate = (values >= certified_cut(kth, slack, roundoff).unsqueeze(1)) & (values != NEG_INF)
    counts = candidate.sum(dim=1)
    width = max(int(counts.max()), k)
    rows, cols = torch.nonzero(candidate, as_tuple=True)  # each row's keys ascending
    slot = (
        torch.arange(rows.numel(), device=values.device) - (torch.cumsum(counts, 0) - counts)[rows]
    )
    keys = torch.zeros((num_rows, width), dtype=torch.long, device=values.device)
    keys[rows, slot] = cols
    exact = rescore_torch(query, key, keys)  # (B, W)
    exact.masked_fill_(torch.arange(width, device=values.device) >= counts.unsqueeze(1), NEG_INF)
    top, position, counts = select_top_k_torch(exact, k)  # ties: lower slot = lower key
    keys = torch.gather(keys, 1, position).masked_fill_(top == NEG_INF, 0)
    return top, keys, counts


class _SeenOnDevice:
    """The seen CSR for one `top_n` run: host arrays for the compiled kernel, and on first
    use by the torch path, device tensors that mask a chunk's scores in place."""

    def __init__(self, seen: SeenMatrix, device: torch.device, num_keys: int) -> None:
        self.indptr_np = np.ascontiguousarray(seen.indptr, dtype=np.int64)
        self.indices_np = np.ascontiguousarray(seen.indices, dtype=np.int32)
        indptr, indices = self.indptr_np, self.indices_np
        # an index past the row would mask the next row's key in the flat torch mask
        if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= num_keys):
            raise ValueError(f"seen key index out of range (expected 0 to {num_keys - 1})")
        rising = len(indptr) > 0 and indptr[0] >= 0 and bool((np.diff(indptr) >= 0).all())
        if not rising or indptr[-1] > len(indices):  # the kernel trusts these bounds
            raise ValueError("seen matrix: indptr must rise from >= 0 to <= len(indices)")
        self.device = device
        self._tensors: tuple[torch.Tensor, torch.Tensor] | None = None
        self._lock = threading.Lock()

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        with self._lock:
            if self._tensors is None:
                self._tensors = (
                    torch.from_numpy(self.indptr_np).to(self.device),
                    torch.from_numpy(self.indices_np.astype(np.int64)).to(self.device),
                )
        return self._tensors

    def mask_(self, scores: torch.Tensor, block: np.ndarray, rows: torch.Tensor) -> None:
        num_keys = scores.shape[1]
        if len(block) == 0:
            return
        indptr, indices = self.tensors()
        lo, hi = int(block[0]), int(block[-1]) + 1
        if hi - lo == len(block) and bool((np.diff(block) == 1).all()):
            # contiguous queries: one slice of the CSR
            start, stop = int(self.indptr_np[lo]), int(self.indptr_np[hi])
            cols = indices[start:stop]
            lengths = indptr[lo + 1 : hi + 1] - indptr[lo:hi]
        else:
            starts, stops = indptr[rows], indptr[rows + 1]
            lengths = stops - starts
            offsets = torch.repeat_interleave(
                starts - (torch.cumsum(lengths, 0) - lengths), lengths
            )
            cols = indices[offsets + torch.arange(offsets.numel(), device=offsets.device)]
        local = torch.repeat_interleave(torch.arange(len(block), device=scores.device), lengths)
        scores.view(-1).index_fill_(0, local * num_keys + cols, NEG_INF)
