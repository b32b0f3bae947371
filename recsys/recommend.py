"""From a trained model to published rows: every user's top-N and every item's similar items,
as Arrow batches in ID order.

Each user's list comes from one of three paths, recorded in the `source` column:
- model: users with interactions, scored by the trained model;
- features: users without interactions, scored from their side features (FM, DeepFM);
- popularity: users without interactions when the model has no features, or users known only
  from the users-to-score list: the most popular items.
Items without interactions are left out when the model has no features to score them by.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import torch

from recsys.checkpoint import TrainedModel
from recsys.data.idmap import IdMap
from recsys.score import BlockScorer, SeenMatrix, TopN, scorer_for, similar_items_scorer, top_n

log = logging.getLogger(__name__)

SOURCES = ("model", "features", "popularity")
MODEL, FEATURES, POPULARITY = range(3)


def user_routes(trained: TrainedModel) -> np.ndarray:
    """(num_users,) int8: which path serves each user."""
    warm = np.diff(trained.seen.indptr) > 0
    cold = FEATURES if trained.model.uses_features else POPULARITY
    return np.where(warm, MODEL, cold).astype(np.int8)


def scorable_items(trained: TrainedModel) -> np.ndarray:
    """(num_items,) bool: items the model can score (all of them, for feature models)."""
    counts = trained.catalogue["num_interactions"].to_numpy()
    return np.ones(len(counts), dtype=bool) if trained.model.uses_features else counts > 0


class RoutedScorer(BlockScorer):
    """The model's scores for routed-to-model (or -features) users, the popularity vector for
    the rest, and -inf for items no one may be recommended."""

    def __init__(
        self,
        primary: BlockScorer,
        popularity: np.ndarray,
        routes: np.ndarray,
        allowed: np.ndarray,
        device: torch.device,
    ) -> None:
        self.primary = primary
        self.num_queries, self.num_keys = primary.num_queries, primary.num_keys
        self.bytes_per_score = primary.bytes_per_score
        self.popularity = torch.as_tensor(popularity, dtype=torch.float32, device=device)  # (I,)
        self.fallback = torch.as_tensor(routes == POPULARITY, device=device)  # (Q,)
        self.blocked = torch.as_tensor(~allowed, device=device)  # (I,)
        self.any_fallback, self.any_blocked = bool(self.fallback.any()), bool(self.blocked.any())

    def score(self, rows: torch.Tensor) -> torch.Tensor:
        # exact fp32 scores: the half-precision shortcut's rescoring knows nothing of routes
        primary = self.primary
        scores = primary.score_exact(rows) if primary.approximate else primary.score(rows)  # (B, I)
        if self.any_fallback:
            use = self.fallback[rows]
            if bool(use.any()):
                scores[use] = self.popularity
        if self.any_blocked:
            scores[:, self.blocked] = float("-inf")
        return scores


def recommendation_batches(
    trained: TrainedModel,
    top: int,
    device: torch.device,
    dtype: torch.dtype,
    budget_bytes: int,
    queries: np.ndarray | None = None,
    what: str = "scoring users",
) -> Iterator[pa.Table]:
    """Top-`top` lists of `queries` (user indices in order; default every user)."""
    routes = user_routes(trained)
    allowed = scorable_items(trained)
    counts = np.bincount(routes if queries is None else routes[queries], minlength=len(SOURCES))
    log.info(
        "lists by path: %s", ", ".join(f"{SOURCES[i]} {counts[i]}" for i in range(len(SOURCES)))
    )
    if (~allowed).any():
        log.info(
            "%d items without interactions left out: %s has no features to score them by",
            int((~allowed).sum()),
            trained.model.name,
        )
    popularity = np.log1p(trained.catalogue["num_interactions"].to_numpy().astype(np.float32))
    scorer = scorer_for(trained.model, device, dtype)
    if (routes == POPULARITY).any() or (~allowed).any():  # else the model's scorer as it is
        scorer = RoutedScorer(scorer, popularity, routes, allowed, device)
    chunks = top_n(
        scorer,
        top,
        trained.seen,
        queries=queries,
        device=device,
        budget_bytes=budget_bytes,
        what=what,
    )
    for chunk in chunks:
        yield topn_batch(
            chunk,
            trained.users,
            trained.items,
            ("user_id", "item_id"),
            routes[chunk.query_idx],
        )


@torch.no_grad()
def score_spread(trained: TrainedModel, device: torch.device, sample: int = 256) -> float:
    """The widest range of the model's scores over the items it may recommend, for up to
    `sample` users it serves (evenly spaced): 0 when every such item scores the same for each
    of them, the mark of a model that ranks nothing (the quality gate refuses it)."""
    warm = np.flatnonzero(user_routes(trained) != POPULARITY)
    allowed = torch.as_tensor(scorable_items(trained), device=device)
    if warm.size == 0 or not bool(allowed.any()):
        return float("nan")
    rows = warm[np.linspace(0, warm.size - 1, min(sample, warm.size)).astype(np.int64)]
    scores = scorer_for(trained.model, device).score(torch.from_numpy(rows).to(device))
    scores = scores[:, allowed]  # (B, allowed items)
    return float((scores.amax(dim=1) - scores.amin(dim=1)).max())


def similar_items_skipped(trained: TrainedModel, n: int) -> str:
    """Why `similar_items` stays empty for this model ("" when it is computed)."""
    if n <= 0:
        return "disabled"
    if not trained.model.has_item_matrix and trained.model.item_representations().shape[1] < 2:
        return f"{trained.model.name} has no item vectors"
    return ""


def similar_item_queries(trained: TrainedModel) -> np.ndarray:
    """Item indices that get similar items: those whose vectors the model learned."""
    return np.flatnonzero(scorable_items(trained))


def similar_item_batches(
    trained: TrainedModel,
    n: int,
    device: torch.device,
    budget_bytes: int,
    queries: np.ndarray | None = None,
    what: str = "similar items",
) -> Iterator[pa.Table]:
    """Items whose vectors the model learned, against each other (itself excluded); `queries`
    (default: `similar_item_queries`) picks which items get lists."""
    allowed = scorable_items(trained)
    if queries is None:
        queries = similar_item_queries(trained)
    scorer = similar_items_scorer(trained.model, device)
    blocked = SeenMatrix.identity(len(trained.items))
    if (~allowed).any():  # untrained item vectors are neither queries nor answers
        scorer = RoutedScorer(
            scorer, np.zeros(len(allowed)), np.zeros(len(allowed), np.int8), allowed, device
        )
    chunks = top_n(
        scorer,
        n,
        blocked,
        queries=queries,
        device=device,
        budget_bytes=budget_bytes,
        what=what,
        unit="items",
    )
    for chunk in chunks:
        yield topn_batch(chunk, trained.items, trained.items, ("item_id", "similar_item_id"))


def topn_batch(
    chunk: TopN,
    queries: IdMap,
    keys: IdMap,
    names: tuple[str, str],
    routes: np.ndarray | None = None,
) -> pa.Table:
    """One chunk as Arrow rows (query_id, rank, key_id, score, [source]), invalid (excluded)
    slots dropped, IDs decoded to their raw form. `routes` gives each query's path. No run_id:
    the tables hold it once, in their schema (sql/ddl)."""
    width = chunk.key_idx.shape[1]
    valid = np.arange(width)[None, :] < chunk.counts[:, None]  # (B, N)
    columns = {
        names[0]: queries.decode_arrow(np.repeat(chunk.query_idx, chunk.counts)),
        "rank": pa.array(
            np.broadcast_to(np.arange(1, width + 1, dtype=np.int32), valid.shape)[valid]
        ),
        names[1]: keys.decode_arrow(chunk.key_idx[valid]),
        "score": pa.array(chunk.score[valid]),
    }
    if routes is not None:
        columns["source"] = pa.DictionaryArray.from_arrays(
            pa.array(np.repeat(routes, chunk.counts)), pa.array(SOURCES)
        )
    return pa.table(columns)
