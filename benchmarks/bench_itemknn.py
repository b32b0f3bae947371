"""Item-kNN at catalogue scale (`make bench-itemknn`): fit and score on a seeded implicit
dataset of 200,000 users x 1,000,000 items, reporting seconds and peak memory (RSS) per
phase against the bound stated in recsys/models/itemknn.py.

Items have Zipf-like popularity and users pick within planted taste clusters, so neighbour
lists are realistic in length. Scoring covers a sample of users (--score-users); its memory
is the chunk budget's, whatever the number of users.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from recsys.models import build_model
from recsys.models.base import Feedback
from recsys.models.itemknn import BYTES_PER_ENTRY, CHUNK_ENTRIES
from recsys.score import SeenMatrix, scorer_for, top_n


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def dataset(num_users: int, num_items: int, per_user: int, seed: int) -> Feedback:
    """Each user picks `per_user` items: half from their taste cluster, half by popularity."""
    rng = np.random.default_rng(seed)
    clusters = 1000
    popularity = 1.0 / np.arange(1, num_items + 1) ** 0.9
    popularity /= popularity.sum()
    by_popularity = rng.choice(num_items, (num_users, per_user // 2), p=popularity)
    cluster_of_user = rng.integers(0, clusters, num_users)
    cluster_size = num_items // clusters
    in_cluster = cluster_of_user[:, None] * cluster_size + rng.integers(
        0, cluster_size, (num_users, per_user - per_user // 2)
    )
    items = np.concatenate([by_popularity, in_cluster], axis=1)
    users = np.repeat(np.arange(num_users), per_user)
    keys = np.unique(users.astype(np.int64) * num_items + items.ravel())
    u, i = keys // num_items, keys % num_items
    n = len(keys)
    return Feedback(torch.from_numpy(u), torch.from_numpy(i), torch.ones(n), torch.ones(n),
                    torch.zeros(n), torch.zeros(n), num_users, num_items, ordered=False)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--per-user", type=int, default=20)
    parser.add_argument("--neighbours", type=int, default=100)
    parser.add_argument("--score-users", type=int, default=2_000)
    parser.add_argument("--top-n", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.monotonic()
    feedback = dataset(args.users, args.items, args.per_user, seed=0)
    n = len(feedback.user_idx)
    print(f"data: {args.users:,} users x {args.items:,} items, {n:,} interactions, "
          f"{time.monotonic() - started:.1f} s, peak RSS {peak_rss_mb():,.0f} MB", flush=True)  # fmt: skip
    base = peak_rss_mb()

    started = time.monotonic()
    model = build_model("itemknn", args.users, args.items, neighbours=args.neighbours)
    model.fit_direct(feedback)
    fit_s = time.monotonic() - started
    lists = 8 * args.neighbours * args.items / 2**20
    chunk = BYTES_PER_ENTRY * CHUNK_ENTRIES / 2**20
    bound = lists + 36 * n / 2**20 + chunk
    print(f"fit: {fit_s:.1f} s, peak RSS {peak_rss_mb():,.0f} MB ({peak_rss_mb() - base:,.0f} MB "
          f"above the data; stated bound {bound:,.0f} MB: neighbour lists {lists:,.0f} MB, "
          f"interaction copies and profiles {36 * n / 2**20:,.0f} MB, one chunk "
          f"{chunk:,.0f} MB)", flush=True)  # fmt: skip

    started = time.monotonic()
    users = np.sort(np.random.default_rng(1).choice(args.users, args.score_users, replace=False))
    indptr = model.profile_indptr.numpy()
    seen = SeenMatrix(indptr, model.profile_items.numpy().astype(np.int32))
    rows = 0
    for chunk in top_n(scorer_for(model, torch.device("cpu")), args.top_n, seen, users):
        rows += int(chunk.counts.sum())
    score_s = time.monotonic() - started
    pairs = args.score_users * args.items
    print(f"score: {args.score_users:,} users x {args.items:,} items in {score_s:.1f} s "
          f"({pairs / score_s / 1e6:,.0f} M pairs/s), {rows:,} rows, peak RSS "
          f"{peak_rss_mb():,.0f} MB; all {args.users:,} users would take about "
          f"{score_s * args.users / args.score_users / 60:,.0f} min", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
