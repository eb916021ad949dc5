"""`reverie train --nproc N`: the same command under torchrun, one process per rank on this machine.

    reverie train --nproc 2 --env CartPole-v1 --logdir runs/cp2
        ≡ python -m torch.distributed.run --standalone --nproc-per-node 2 -m reverie train --env CartPole-v1 --logdir runs/cp2

For several machines call torchrun itself with a c10d rendezvous (README, "Scaling out").
"""

from __future__ import annotations

import os
import subprocess
import sys

from ..errors import UserError


def torchrun_command(nproc: int, train_args: list[str]) -> list[str]:
    """The torchrun command line that runs `reverie train <train_args>` on `nproc` local ranks."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "reverie", "train", *train_args]


def launch(nproc: int, train_args: list[str]) -> int:
    """Run the job and return its exit code (torchrun's: 0, or 1 when a rank failed, naming it)."""
    if "WORLD_SIZE" in os.environ:
        raise UserError("--nproc inside a torchrun job: drop --nproc (torchrun already started the ranks)")
    return subprocess.call(torchrun_command(nproc, train_args))
