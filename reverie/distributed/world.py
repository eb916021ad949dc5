"""Which process of a data-parallel job this is, and joining the job's process group.

`torchrun` (or `reverie train --nproc N`, which launches it) starts one process per rank and
tells each one where it stands through environment variables: RANK, WORLD_SIZE, LOCAL_RANK and
the rendezvous MASTER_ADDR/MASTER_PORT. `join(device)` reads them and, for a world of two or more,
initialises torch.distributed with the backend that fits the device: NCCL for CUDA, gloo for the
CPU, the same code path for both. A process started without them is a world of one: every
collective in `collectives.py` is then a no-op and the run is exactly the single-process run.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import UserError

# A collective waits this long for the other ranks before the job fails: rank 0 evaluates, writes
# videos and checkpoints while the others wait at their next update.
TIMEOUT = datetime.timedelta(hours=2)
SEED_STRIDE = 10_000  # rank r seeds its envs, replay and actions with seed + r · SEED_STRIDE


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes metrics, videos, evaluations and the agent's checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def seed(self, seed: int) -> int:
        """This rank's seed for what must differ between ranks (envs, replay sampling, actions);
        rank 0 keeps `seed`, so a world of one is the single-process run."""
        return seed + SEED_STRIDE * self.rank

    def device(self, device: torch.device) -> torch.device:
        """The device this rank computes on: with CUDA, GPU `LOCAL_RANK` of its machine."""
        if self.distributed and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device


def from_environment() -> World:
    """The World that torchrun's environment variables describe (a world of one without them)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UserError("WORLD_SIZE, RANK and LOCAL_RANK must be integers: start a data-parallel run with "
                        "torchrun or reverie train --nproc N") from None
    if size < 1 or not 0 <= rank < size:
        raise UserError(f"RANK {rank} is not in a world of WORLD_SIZE {size}: start a data-parallel run with "
                        "torchrun or reverie train --nproc N")
    return World(rank, size, local_rank)


def join(device: torch.device) -> World:
    """This process's World; in a world of two or more, the process group is initialised (once) with
    NCCL on CUDA, else gloo, and on CUDA the rank's GPU becomes the current device."""
    world = from_environment()
    if not world.distributed:
        return world
    if dist.is_initialized():
        return world
    if device.type == "cuda":
        if torch.cuda.device_count() <= world.local_rank:
            raise UserError(f"rank {world.rank} needs GPU {world.local_rank} but torch sees "
                            f"{torch.cuda.device_count()}: start at most as many ranks per machine as it has GPUs")
        torch.cuda.set_device(world.local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT)
    return world


def current() -> World:
    """The World of the process group this process has joined (a world of one if none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def leave() -> None:
    """Leave the process group (at the end of a run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
