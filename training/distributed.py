"""Data-parallel helpers for ``torchrun --nproc_per_node=N -m training ...``.

torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and the rendezvous address; without them everything
here is
a no-op for a single process. The backend is ``nccl`` on CUDA and ``gloo`` on CPU. Only rank 0 writes files
and
logs; the other ranks train their shard and follow rank 0's evaluation decisions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(use_cuda: bool) -> DistInfo:
    """Join the process group when launched by torchrun with more than one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    import torch.distributed as dist

    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(
        rank=dist.get_rank(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        world_size=dist.get_world_size(),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size))),
        backend=backend,
    )


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def broadcast(info: DistInfo, value: T) -> T:
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if not info.enabled:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(info: DistInfo, value: T) -> list[T]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not info.enabled:
        return [value]
    import torch.distributed as dist

    out = [value] * info.world_size  # every slot is overwritten by its rank's value
    dist.all_gather_object(out, value)
    return out


def shutdown(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
