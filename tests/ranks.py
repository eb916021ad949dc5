"""Run a function on W ranks of a local gloo job, as torchrun would start them, and collect what each returns.

`run_ranks(fn, W, *args)` spawns W fresh processes with torchrun's environment variables (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT); each calls `fn(rank, *args)`, which joins the process
group through `reverie.distributed.join` like a real run, and the values they return come back in
rank order. `fn` must live in an importable module (the processes are spawned, not forked).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from reverie.nn import distributions


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world_size: int, port: int, folder: str, fn, args) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    result = fn(rank, *args)
    torch.save(result, Path(folder) / f"rank{rank}.pt")


def run_ranks(fn, world_size: int, folder: Path, *args) -> list:
    """fn(rank, *args) on `world_size` spawned ranks; their return values, rank order."""
    folder.mkdir(parents=True, exist_ok=True)
    mp.start_processes(_rank_main, args=(world_size, free_port(), str(folder), fn, args), nprocs=world_size,
                       join=True, start_method="spawn")
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(world_size)]


def sample_modes() -> None:
    """Every distribution's `sample` returns its mode: an update becomes a function of its batch alone,
    so updates on differently split batches can be compared exactly."""
    for cls in vars(distributions).values():
        if isinstance(cls, type) and issubclass(cls, distributions.Distribution) and "mode" in vars(cls):
            cls.sample = cls.mode
