"""Sharded scoring on one machine: the same total CPU threads as one process or as several
ranks, on a synthetic factor model (`make bench-shards`; numbers in docs/scaling.md).

Writes a checkpoint of a random MF model (users x items, d=64, ~50 seen items per user), then
runs the installed `recsys score --parts` as real processes: one process with T threads
(`--shard 0/1`), T plain processes with one thread each (`--shard K/T`, started together),
and, end to end with the publish, world size 1 with T threads against `torchrun
--nproc-per-node T`. Each configuration runs in interleaved rounds; the best round counts.
"scoring" is the slowest rank's scoring-and-writing time from its manifest; "wall" adds
start-up (imports, loading and hashing the checkpoint) and, end to end, the publish.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from recsys.checkpoint import TrainedModel, save_checkpoint
from recsys.data.idmap import IdMap
from recsys.models import build_model
from recsys.score import SeenMatrix

RECSYS = str(Path(sys.executable).parent / "recsys")


def make_checkpoint(path: Path, num_users: int, num_items: int, dim: int, seen: int) -> None:
    """A random MF model with factor norms spread like trained ones and skewed histories."""
    rng = np.random.default_rng(0)
    model = build_model("mf", num_users, num_items, dim=dim)
    with torch.no_grad():
        user = rng.standard_normal((num_users, dim), dtype=np.float32) / np.sqrt(dim)
        item = rng.standard_normal((num_items, dim), dtype=np.float32) / np.sqrt(dim)
        item *= rng.lognormal(0.0, 0.3, (num_items, 1)).astype(np.float32)
        model.user_emb.weight.copy_(torch.from_numpy(user))
        model.item_emb.weight.copy_(torch.from_numpy(item))
    lengths = np.minimum(rng.poisson(seen, num_users), num_items)
    weights = 1.0 / np.sqrt(np.arange(1, num_items + 1))
    indices = rng.choice(num_items, int(lengths.sum()), p=weights / weights.sum())
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    rows = [np.unique(indices[indptr[u] : indptr[u + 1]]) for u in range(num_users)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    indices = np.concatenate(rows).astype(np.int32)
    counts = np.bincount(indices, minlength=num_items) + 1  # every item scorable
    items = list(range(500_000, 500_000 + num_items))
    catalogue = pl.DataFrame({"item_id": items, "title": [f"Item {i}" for i in items],
                              "genres": [""] * num_items, "num_interactions": counts})  # fmt: skip
    save_checkpoint(
        TrainedModel(model=model, users=IdMap.from_list(list(range(10_000, 10_000 + num_users))),
                     items=IdMap.from_list(items), seen=SeenMatrix(indptr, indices),
                     catalogue=catalogue, source="synthetic", num_interactions=len(indices)),
        path,
    )  # fmt: skip


def env_for(threads: int, top_n: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "RECSYS_SCORING_TOP_N": str(top_n),
            "RECSYS_SCORING_SIMILAR_ITEMS_N": "0", "RECSYS_OUTPUT_REPORT": "false",
            "RECSYS_GATE_ENABLED": "false"}  # fmt: skip


def slowest(parts: Path) -> float:
    return max(
        json.loads(m.read_text())["tables"]["recommendations"]["seconds"]
        for m in parts.glob("manifest-*.json")
    )


def shards(
    checkpoint: Path, work: Path, ranks: int, threads: int, top_n: int
) -> tuple[float, float]:
    """`ranks` plain processes (`--shard K/ranks`) started together; (scoring s, wall s)."""
    parts = work / f"parts-{ranks}x{threads}"
    shutil.rmtree(parts, ignore_errors=True)
    start = time.monotonic()
    running = [
        subprocess.Popen([RECSYS, "score", "--config", os.devnull, "--checkpoint", str(checkpoint),
                          "--parts", str(parts), "--shard", f"{k}/{ranks}"],
                         env=env_for(threads, top_n), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
        for k in range(ranks)
    ]  # fmt: skip
    for process in running:
        _, err = process.communicate()
        assert process.returncode == 0, err
    return slowest(parts), time.monotonic() - start


def end_to_end(checkpoint: Path, work: Path, ranks: int, threads: int, top_n: int):
    """Score and publish: world size 1 (`score --parts`, no torchrun) with `threads` threads,
    or `torchrun --nproc-per-node ranks` (recsys.distributed gives each rank its share of the
    cores); (scoring s, wall s)."""
    parts, database = work / f"e2e-{ranks}", work / f"e2e-{ranks}" / "db" / "recs.duckdb"
    shutil.rmtree(parts, ignore_errors=True)
    command = [RECSYS, "score", "--config", os.devnull, "--checkpoint", str(checkpoint),
               "--parts", str(parts), "--database", str(database)]  # fmt: skip
    if ranks > 1:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks),
                   "--master-port", str(port), "--no-python", *command]  # fmt: skip
    start = time.monotonic()
    done = subprocess.run(command, env=env_for(threads, top_n), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    wall = time.monotonic() - start
    ledger = database.parent / "recs.runs.jsonl"
    timings = json.loads(ledger.read_text().splitlines()[-1])["timings"]
    print(f"  run phases (s): {json.loads(timings) if isinstance(timings, str) else timings}")
    return slowest(parts), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--top-n", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="total CPU threads (= ranks)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-end-to-end", action="store_true", help="skip torchrun + publish")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-shards-"))
    try:
        checkpoint = work / "model.pt"
        start = time.monotonic()
        make_checkpoint(checkpoint, args.users, args.items, args.dim, 50)
        print(f"{args.users:,} users x {args.items:,} items, d={args.dim}, top-{args.top_n}, "
              f"~50 seen per user; checkpoint {checkpoint.stat().st_size / 2**20:.0f} MiB "
              f"({time.monotonic() - start:.0f}s); {os.cpu_count()} CPUs, load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)  # fmt: skip
        t = args.threads
        configs = {
            "1 process x 1 thread": lambda: shards(checkpoint, work, 1, 1, args.top_n),
            f"1 process x {t} threads": lambda: shards(checkpoint, work, 1, t, args.top_n),
            f"{t} processes x 1 thread (--shard K/{t})": lambda: shards(checkpoint, work, t, 1,
                                                                         args.top_n),
        }  # fmt: skip
        if not args.no_end_to_end:
            configs[f"end to end: world size 1 x {t} threads"] = lambda: end_to_end(
                checkpoint, work, 1, t, args.top_n
            )
            configs[f"end to end: torchrun {t} ranks x 1 thread"] = lambda: end_to_end(
                checkpoint, work, t, 1, args.top_n
            )
        best: dict[str, tuple[float, float]] = {}
        for round_ in range(args.rounds):
            for name, run in configs.items():
                scoring, wall = run()
                print(f"round {round_ + 1}: {name}: scoring {scoring:.1f}s, wall {wall:.1f}s "
                      f"(load {os.getloadavg()[0]:.2f})", flush=True)  # fmt: skip
                old = best.get(name, (float("inf"), float("inf")))
                best[name] = (min(old[0], scoring), min(old[1], wall))
        pairs = args.users * args.items
        base = best["1 process x 1 thread"][0]
        print(f"\nbest of {args.rounds} rounds; load average now "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
        print("| configuration | scoring s | M pairs/s | vs 1 thread | wall s |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, (scoring, wall) in best.items():
            print(f"| {name} | {scoring:.1f} | {pairs / scoring / 1e6:.1f} | "
                  f"{base / scoring:.2f}x | {wall:.1f} |")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
