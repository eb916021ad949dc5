"""Data-parallel training on torch.distributed (gloo on the CPU, NCCL on GPUs).

One process per rank, started by `torchrun` (or `reverie train --nproc N`): each rank has its own
envs, seeded by rank, and its own replay shard; every rank holds the same agent and trains it on
its B/W sequences of the global batch B, the gradients averaged over the ranks before the
optimiser step (`collectives.py`). `world.py` says which rank a process is and joins the process
group; `launch.py` builds the torchrun command; the trainer (`reverie.run.train`) does the rest:
rank 0 writes the metrics, evaluations, videos and the agent's checkpoints, rank r its replay
shard and its own state under `logdir/ranks/<r>/`.
"""

from .collectives import (
           all_min,
           all_true,
           average_gradients,
           broadcast_state,
           gather_rows,
           world_size,
)
from .launch import launch, torchrun_command
from .world import World, current, from_environment, join, leave

__all__ = ["World", "all_min", "all_true", "average_gradients", "broadcast_state", "current", "from_environment", "gather_rows",
           "join", "launch", "leave", "torchrun_command", "world_size"]
