"""DistributedDataParallel setup from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK).

Without those variables everything runs as one process; with them, NCCL on CUDA and gloo on CPU."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistState:
    enabled: bool
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            from device.errors import EdgesortError

            raise EdgesortError("--device cuda was asked for but CUDA is not available on this machine")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


def init_distributed(device: str = "auto") -> DistState:
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistState(False, 0, 1, 0, pick_device(device, 0))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistState(world > 1, rank, world, local_rank, dev)


def barrier(state: DistState) -> None:
    if state.enabled:
        dist.barrier()


def cleanup(state: DistState) -> None:
    if state.enabled and dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
