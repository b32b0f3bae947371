"""The scoring engine: every query (user) against every key (item) in chunks, top-N on device.

Per chunk: one dense score block (B, I), seen items set to -inf through a flat `index_fill_`,
`torch.topk`, and one copy of (B, N) int32/float32 to the host. The full query x key matrix is
never materialised; the chunk size comes from a memory budget.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from recsys.models.base import Factors, Recommender
from recsys.progress import Progress

log = logging.getLogger(__name__)

DEFAULT_CPU_BUDGET = 256 * 2**20
GPU_BUDGET_FRACTION = 0.4
# Scratch bytes per score: the block itself plus topk's working copies.
BYTES_PER_SCORE = 12


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
    """Queries per chunk so that one chunk's scratch fits `budget_bytes` (0 = automatic)."""
    if budget_bytes <= 0:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            budget_bytes = int(free * GPU_BUDGET_FRACTION)
        else:
            budget_bytes = DEFAULT_CPU_BUDGET
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

    def score(self, rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class FactorScorer(BlockScorer):
    """scores = query[rows] @ key.T, optionally in half precision with fp32 accumulation."""

    def __init__(
        self, query: torch.Tensor, key: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> None:
        self.num_queries, self.num_keys = query.shape[0], key.shape[0]
        self.dtype = dtype
        self.query = query.detach().to(dtype).contiguous()  # (Q, D)
        self.key_t = key.detach().to(dtype).T.contiguous()  # (D, K)

    def score(self, rows: torch.Tensor) -> torch.Tensor:
        block = self.query[rows] @ self.key_t  # (B, K)
        return block if block.dtype == torch.float32 else block.float()


class ModelScorer(BlockScorer):
    """Scores through the model's own `score_block` (models without a linear form)."""

    def __init__(self, model: Recommender) -> None:
        self.model = model
        self.num_queries, self.num_keys = model.num_users, model.num_items
        self.bytes_per_score = max(BYTES_PER_SCORE, model.bytes_per_score)

    @torch.no_grad()
    def score(self, rows: torch.Tensor) -> torch.Tensor:
        return self.model.score_block(rows).float()


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


def similar_items_scorer(model: Recommender, device: torch.device) -> FactorScorer:
    """Cosine similarity of the model's item representations, items as queries."""
    model = model.to(device).eval()
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
) -> Iterator[TopN]:
    """Yield the top-`n` unseen keys for `queries` (default: all), chunk by chunk, in order."""
    device = device or torch.device("cpu")
    if queries is None:
        queries = np.arange(scorer.num_queries, dtype=np.int64)
    queries = np.asarray(queries, dtype=np.int64)
    k = min(n, scorer.num_keys)
    rows_per_chunk = chunk_rows(scorer.num_keys, device, budget_bytes, scorer.bytes_per_score)
    seen_dev = _SeenOnDevice(seen, device) if seen is not None else None
    progress = Progress(len(queries), what)
    with torch.no_grad():
        for start in range(0, len(queries), rows_per_chunk):
            block = queries[start : start + rows_per_chunk]
            rows = torch.from_numpy(block).to(device)
            scores = scorer.score(rows)  # (B, K)
            if seen_dev is not None:
                seen_dev.mask_(scores, block, rows)
            values, idx = torch.topk(scores, k, dim=1, sorted=True)  # (B, k)
            values_np = values.cpu().numpy()
            counts = np.isfinite(values_np).sum(axis=1) if k else np.zeros(len(block), np.int64)
            yield TopN(block, idx.to(torch.int32).cpu().numpy(), values_np, counts.astype(np.int64))
            progress.update(len(block))
    progress.close()


class _SeenOnDevice:
    """The seen CSR on the scoring device, masking a chunk's scores in place."""

    def __init__(self, seen: SeenMatrix, device: torch.device) -> None:
        self.indptr_np = seen.indptr
        self.indptr = torch.from_numpy(seen.indptr).to(device)
        self.indices = torch.from_numpy(seen.indices.astype(np.int64)).to(device)

    def mask_(self, scores: torch.Tensor, block: np.ndarray, rows: torch.Tensor) -> None:
        num_keys = scores.shape[1]
        lo, hi = int(block[0]), int(block[-1]) + 1
        if hi - lo == len(block):  # contiguous queries: one slice of the CSR
            start, stop = int(self.indptr_np[lo]), int(self.indptr_np[hi])
            cols = self.indices[start:stop]
            lengths = self.indptr[lo + 1 : hi + 1] - self.indptr[lo:hi]
        else:
            starts, stops = self.indptr[rows], self.indptr[rows + 1]
            lengths = stops - starts
            offsets = torch.repeat_interleave(
                starts - (torch.cumsum(lengths, 0) - lengths), lengths
            )
            cols = self.indices[offsets + torch.arange(offsets.numel(), device=offsets.device)]
        local = torch.repeat_interleave(torch.arange(len(block), device=scores.device), lengths)
        scores.view(-1).index_fill_(0, local * num_keys + cols, float("-inf"))
