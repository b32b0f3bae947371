"""Seeded generators: the demo dataset and planted-structure data for tests.

Users and items belong to latent taste clusters; an item's chance of being picked is its
power-law popularity times a strong boost when its cluster matches the user's. Side features
(occupation, age, genres) are correlated with the clusters, so feature-based models can
recover them too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "Documentary",
          "Animation", "Crime", "Fantasy", "Musical"]  # fmt: skip
OCCUPATIONS = ["engineer", "student", "artist", "doctor", "writer", "lawyer", "teacher",
               "scientist", "retired", "other"]  # fmt: skip
START_TS = 1_600_000_000  # 2020-09-13
SPAN_S = 365 * 86_400


@dataclass
class Dataset:
    interactions: pl.DataFrame  # user_id, item_id, rating, timestamp
    user_features: pl.DataFrame  # user_id, age, gender, occupation
    item_features: pl.DataFrame  # item_id, title, genres ("A|B"), year
    user_cluster: np.ndarray  # (num_users,) planted cluster of user index u (user_id = u + 1)
    item_cluster: np.ndarray  # (num_items,)


def planted(
    num_users: int = 500,
    num_items: int = 300,
    per_user: int = 20,
    num_clusters: int = 8,
    affinity: float = 4.0,
    popularity_exponent: float = 0.8,
    rating_noise: float = 0.5,
    rating_signal: float | None = None,
    seed: int = 0,
) -> Dataset:
    """Interactions with planted clusters; `affinity=0` gives pure popularity-shaped noise.

    `affinity` shapes which items a user picks; `rating_signal` (default: 1.3 when affinity
    is positive, else 0) is how much higher in-cluster items are rated.

    User IDs are 1..num_users and item IDs 1..num_items (user index + 1), as in MovieLens.
    """
    rng = np.random.default_rng(seed)
    user_cluster = rng.integers(0, num_clusters, num_users)
    item_cluster = rng.integers(0, num_clusters, num_items)
    # Zipf-like popularity over a random item order: item i has weight rank^-exponent.
    popularity = (rng.permutation(num_items) + 1.0) ** -popularity_exponent
    quality = rng.normal(0, 0.4, num_items)
    user_bias = rng.normal(0, 0.3, num_users)
    per_user = min(per_user, num_items)
    if rating_signal is None:
        rating_signal = 1.3 if affinity > 0 else 0.0

    rows_u, rows_i, rows_r = [], [], []
    for start in range(0, num_users, 1024):  # bounded memory: one (block, items) matrix
        users = np.arange(start, min(start + 1024, num_users))
        match = user_cluster[users, None] == item_cluster[None, :]  # (B, I)
        logits = np.log(popularity)[None, :] + affinity * match
        gumbel = -np.log(-np.log(rng.random(logits.shape)))
        picked = np.argpartition(-(logits + gumbel), per_user - 1, axis=1)[:, :per_user]  # (B, n)
        liked = np.take_along_axis(match, picked, axis=1)
        raw = (
            3.2 + rating_signal * (liked - 0.5)
            + quality[picked] + user_bias[users, None]
            + rng.normal(0, rating_noise, picked.shape)
        )  # fmt: skip
        rows_u.append(np.repeat(users, per_user))
        rows_i.append(picked.ravel())
        rows_r.append(np.clip(np.rint(raw), 1, 5).ravel())
    user_idx = np.concatenate(rows_u)
    item_idx = np.concatenate(rows_i)
    timestamps = START_TS + rng.integers(0, SPAN_S, user_idx.size)
    interactions = pl.DataFrame(
        {
            "user_id": user_idx + 1,
            "item_id": item_idx + 1,
            "rating": np.concatenate(rows_r).astype(np.float32),
            "timestamp": timestamps.astype(np.int64),
        }
    )
    return Dataset(
        interactions,
        _user_features(user_cluster, rng),
        _item_features(item_cluster, rng),
        user_cluster,
        item_cluster,
    )


def demo(
    num_users: int = 2000, num_items: int = 1000, per_user: int = 40, seed: int = 7
) -> Dataset:
    """The default dataset for `recsys nightly` with no source configured."""
    return planted(
        num_users=num_users,
        num_items=num_items,
        per_user=per_user,
        num_clusters=12,
        affinity=2.5,
        seed=seed,
    )


def _user_features(user_cluster: np.ndarray, rng: np.random.Generator) -> pl.DataFrame:
    n = user_cluster.size
    # Occupation follows the cluster 70% of the time, else random.
    occupation = np.where(
        rng.random(n) < 0.7,
        user_cluster % len(OCCUPATIONS),
        rng.integers(0, len(OCCUPATIONS), n),
    )
    return pl.DataFrame(
        {
            "user_id": np.arange(1, n + 1),
            "age": (18 + (user_cluster * 5) % 45 + rng.integers(0, 8, n)).astype(np.int64),
            "gender": np.where(rng.random(n) < 0.5, "F", "M"),
            "occupation": [OCCUPATIONS[o] for o in occupation],
        }
    )


def _item_features(item_cluster: np.ndarray, rng: np.random.Generator) -> pl.DataFrame:
    n = item_cluster.size
    genres = []
    for cluster in item_cluster:
        own = {GENRES[cluster % len(GENRES)]}
        if rng.random() < 0.5:
            own.add(GENRES[rng.integers(0, len(GENRES))])
        genres.append("|".join(sorted(own)))
    return pl.DataFrame(
        {
            "item_id": np.arange(1, n + 1),
            "title": [f"Item {i}" for i in range(1, n + 1)],
            "genres": genres,
            "year": (1970 + rng.integers(0, 50, n)).astype(np.int64),
        }
    )


def planted_clicks(
    num_users: int = 300,
    num_items: int = 120,
    per_user: int = 20,
    num_segments: int = 4,
    signal: float = 1.0,
    seed: int = 0,
) -> Dataset:
    """Click-through data whose label follows a feature rule: a user "clicks" (rating 5,
    else 1) an item exactly when the user's `segment` equals the item's `category`, for a
    share `signal` of the rows; the other rows get a coin flip. `signal=0` is pure noise.

    Each user sees `per_user` distinct items drawn uniformly, so which pairs exist says
    nothing about their labels. The clusters are the segments and categories.
    """
    rng = np.random.default_rng(seed)
    segment = rng.integers(0, num_segments, num_users)
    category = rng.integers(0, num_segments, num_items)
    per_user = min(per_user, num_items)
    items = np.argsort(rng.random((num_users, num_items)), axis=1)[:, :per_user]  # (U, n)
    users = np.repeat(np.arange(num_users), per_user)
    items = items.ravel()
    ruled = rng.random(users.size) < signal
    clicked = np.where(ruled, segment[users] == category[items], rng.random(users.size) < 0.5)
    interactions = pl.DataFrame(
        {
            "user_id": users + 1,
            "item_id": items + 1,
            "rating": np.where(clicked, 5.0, 1.0).astype(np.float32),
            "timestamp": (START_TS + rng.integers(0, SPAN_S, users.size)).astype(np.int64),
        }
    )
    names = [f"s{s}" for s in range(num_segments)]
    return Dataset(
        interactions,
        pl.DataFrame(
            {"user_id": np.arange(1, num_users + 1), "segment": [names[s] for s in segment]}
        ),
        pl.DataFrame(
            {"item_id": np.arange(1, num_items + 1), "category": [names[c] for c in category]}
        ),
        segment,
        category,
    )
