"""torchrun integration: gloo on CPU, NCCL on GPU; rank 0 writes files."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group that torchrun describes in the environment (a no-op for a single process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return info


def pick_device(device: str | None = None, index: int = 0) -> torch.device:
    """The named device, else the GPU `index` when one is present, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda", index) if torch.cuda.is_available() else torch.device("cpu")


def resolve_device(device: str | None, info: DistInfo) -> torch.device:
    return pick_device(device, info.local_rank)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
