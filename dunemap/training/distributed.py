"""Process-group setup for ``torchrun``: rank/world size from the environment, gloo on CPU, nccl on GPU."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from dunemap.runtime import resolve_device


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group torchrun describes (WORLD_SIZE > 1), else return a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
    return DistContext(rank, world_size, local_rank, dev)


def all_reduce_sum(array: np.ndarray, ctx: DistContext) -> np.ndarray:
    """Sum an integer or float array over all ranks (a no-op in one process)."""
    if not ctx.distributed:
        return array
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64)).to(
        ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().numpy().astype(array.dtype)


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """Indices ``rank, rank + world_size, ...`` below ``n``: every item on exactly one rank, none repeated.

    Unlike ``DistributedSampler`` this does not pad the shards to equal length, so metrics summed over
    ranks count each item once; ranks may get one item fewer (or none when ``n < world_size``).
    """
    return list(range(rank, n, world_size))


def broadcast_buffers(module: torch.nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm running statistics) to every rank (a no-op in one process).

    DDP syncs buffers at the start of each training forward, so after the last step each rank holds
    its own update; broadcasting before evaluation makes every rank score the model rank 0 saves.
    """
    if not ctx.distributed:
        return
    with torch.no_grad():
        for buf in module.buffers():
            dist.broadcast(buf, src=0)


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
