"""The ranks of a scoring job under torchrun (torch.distributed), or one process on its own.

torchrun (`python -m torch.distributed.run`), and Slurm, Kubernetes or TorchX through it, start
one process per rank with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and
MASTER_PORT set; `join` turns that into a process group (gloo on CPU, nccl on GPU) and picks
each rank's device and CPU threads. Without those variables it is world size 1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from recsys.errors import RecsysError
from recsys.interrupts import sigterm_stops

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# How long a rank waits at the barrier for the slowest one (shards are balanced by count, but
# machines are not); a rank that dies is noticed at once, this only bounds one that hangs.
BARRIER_TIMEOUT = timedelta(hours=6)


def launched() -> bool:
    """Whether this process is one rank of a torchrun (or compatible) launch."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def launched_rank() -> int:
    """This process's rank under torchrun (0 when not launched by it)."""
    return int(os.environ.get("RANK", "0")) if launched() else 0


@dataclass
class Group:
    """This process's place among the ranks; `backend` is "" when there is no process group
    (world size 1 without torchrun)."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    backend: str = ""

    def barrier(self) -> None:
        """Wait until every rank has got here (has written its parts)."""
        if not self.backend:
            return
        import torch.distributed as dist

        try:
            if self.backend == "nccl":
                dist.barrier(device_ids=[self.device.index or 0])
            else:
                dist.barrier()
        except RuntimeError as exc:  # torch's DistError included
            raise RecsysError(
                f"rank {self.rank}: lost the other ranks at the barrier ({_reason(exc)})"
            ) from None


def _reason(exc: BaseException) -> str:
    """The gist of a backend error: gloo's first line without its source location and advice
    ('[…/pair.cc:553] Connection closed by peer [10.0.0.2]:4242. This is typically …')."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^\[[^\]]*\]\s*", "", text).split(". ")[0]


def _device(name: str, local_rank: int, local_world_size: int) -> torch.device:
    """The rank's device: with CUDA, GPU `local_rank` of this machine (shared round-robin when
    there are more ranks than GPUs)."""
    import torch

    from recsys.score import resolve_device

    device = resolve_device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def _threads(local_world_size: int) -> int:
    """CPU threads per rank: this machine's cores shared evenly by its ranks (torchrun's own
    default of OMP_NUM_THREADS=1 would leave most cores idle with few ranks per machine)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(local_world_size, 1))


@contextlib.contextmanager
def join(device_name: str = "auto") -> Iterator[Group]:
    """This process as a rank: a process group under torchrun (destroyed on the way out),
    else world size 1 on `device_name`."""
    import torch

    if not launched():
        yield Group(0, 1, 0, 1, _device(device_name, 0, 1))
        return
    import torch.distributed as dist

    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    device = _device(device_name, local_rank, local_world_size)
    # nccl needs a GPU of its own per rank; ranks sharing one (or on CPU) talk over gloo.
    own_gpu = device.type == "cuda" and local_world_size <= torch.cuda.device_count()
    backend = "nccl" if own_gpu and dist.is_nccl_available() else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.set_num_threads(_threads(local_world_size))
    dist.init_process_group(backend, timeout=BARRIER_TIMEOUT)
    log.info("rank %d of %d (local %d of %d): %s, backend %s, %d CPU thread(s)", rank, world_size,
             local_rank, local_world_size, device, backend, torch.get_num_threads())  # fmt: skip
    try:
        yield Group(rank, world_size, local_rank, local_world_size, device, backend)
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


@contextlib.contextmanager
def stop_on_sigterm(why: Callable[[], str]) -> Iterator[None]:
    """Turn SIGTERM into a `Terminated` error here, so the run records why it stopped: torchrun
    sends it to every rank when one rank fails. `why()` adds what is known (failed ranks)."""

    def message() -> str:
        # Already failing is left alone by sigterm_stops: torchrun stops every rank when one
        # dies, and this rank's barrier often notices first, with the better reason.
        known = ""
        with contextlib.suppress(Exception):
            known = why()
        return (
            "stopped by SIGTERM (under torchrun: another rank failed or the job was cancelled)"
            + (f": {known}" if known else "")
        )

    with sigterm_stops(message):
        yield
