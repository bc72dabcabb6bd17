"""Process-group helpers for torchrun (and `accelerate launch`): which process am I, on which device, and waiting
for the others.

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK in every process it starts. Without them (a plain `neogen` run)
there is one process of rank 0 and every helper here does nothing, so callers need no special case. The process
group uses NCCL on CUDA and gloo on CPU, and is only created when there is more than one process.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from neogen.errors import NeogenError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one launch."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """The launch this process belongs to, from torchrun's environment (a single process without it)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise NeogenError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (fix: launch with torchrun, or unset "
                          "them)") from None
    if size > 1 and not 0 <= rank < size:
        raise NeogenError(f"RANK={rank} is outside WORLD_SIZE={size} (fix: launch with torchrun)")
    return World(rank=rank, size=max(size, 1), local_rank=local_rank)


def device(w: World) -> torch.device:
    """cuda:LOCAL_RANK when CUDA exists (one GPU per process on each node), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if w.local_rank >= count:
        raise NeogenError(f"LOCAL_RANK={w.local_rank} but this node has {count} GPU(s) "
                          f"(fix: torchrun --nproc_per_node {count} or fewer)")
    return torch.device("cuda", w.local_rank)


def use_device(w: World) -> torch.device:
    """device(w), made the current CUDA device: collectives, `torch.device("cuda")` and bitsandbytes' device map
    then mean this process's GPU, not cuda:0."""
    d = device(w)
    if d.type == "cuda":
        torch.cuda.set_device(d)
    return d


def check_single_process_devices(w: World) -> None:
    """Refuse a single process that would see several GPUs: the Trainer would wrap the model in DataParallel and
    multiply the recipe's batch by the GPU count (and DataParallel cannot split the yes_no encoding's cache)."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not w.distributed and count > 1:
        raise NeogenError(f"this process sees {count} GPUs; neogen trains on several GPUs with one process each "
                          f"(fix: torchrun --nproc_per_node {count} -m neogen.cli train ..., or "
                          "CUDA_VISIBLE_DEVICES=0 for one GPU)")


def init(w: World) -> None:
    """Join the process group once (NCCL on CUDA, gloo on CPU); nothing for a single process."""
    if not w.distributed or dist.is_initialized():
        return
    backend = "nccl" if use_device(w).type == "cuda" else "gloo"  # NCCL collectives run on the current device
    dist.init_process_group(backend)
    logger.debug("rank %d of %d joined the %s process group", w.rank, w.size, backend)


def all_gather(obj: Any, w: World) -> list[Any]:
    """Every process's `obj` (picklable), in rank order; also a barrier."""
    if not w.distributed:
        return [obj]
    gathered: list[Any] = [None] * w.size
    dist.all_gather_object(gathered, obj)
    return gathered


def shutdown(w: World) -> None:
    """Leave the process group, so the launch ends without warnings about a group left open."""
    if w.distributed and dist.is_initialized():
        dist.destroy_process_group()


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit in this (main) thread.

    torchrun stops the other processes with SIGTERM when one fails; by default that ends a process on the spot,
    while as an exception `finally` blocks run and half-written part files are removed.
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
