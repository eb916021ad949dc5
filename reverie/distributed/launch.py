"""`reverie train --nproc N`: the same command under torchrun, one process per rank on this machine.

    reverie train --nproc 2 --env CartPole-v1 --logdir runs/cp2
        ≡ torchrun --standalone --nproc-per-node 2 -m reverie train --env CartPole-v1 --logdir runs/cp2

torchrun runs in this process (`torch.distributed.run`); when a rank dies, it stops the others and
the job ends with one line naming the rank and how it ended (a rank's own error is printed above
it), exit code 2 when that rank refused bad input, else 1. For several machines call torchrun itself
with a c10d rendezvous (README, "Scaling out").
"""

from __future__ import annotations

import os
import signal
import sys

from ..errors import UserError


def torchrun_arguments(nproc: int, train_args: list[str]) -> list[str]:
    """torchrun's arguments that run `reverie train <train_args>` on `nproc` local ranks."""
    return ["--standalone", f"--nproc-per-node={nproc}", "-m", "reverie", "train", *train_args]


def torchrun_command(nproc: int, train_args: list[str]) -> list[str]:
    """The same as a command line (what `--nproc` runs, for a user to adapt)."""
    return [sys.executable, "-m", "torch.distributed.run", *torchrun_arguments(nproc, train_args)]


def launch(nproc: int, train_args: list[str]) -> int:
    """Run the job; 0 when every rank finished, else the failure's one line and its exit code."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if "WORLD_SIZE" in os.environ:
        raise UserError("--nproc inside a torchrun job: drop --nproc (torchrun already started the ranks)")
    # torchrun would set OMP_NUM_THREADS=1 and say so in a banner; each rank sets its threads (run.threads)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        run(get_args_parser().parse_args(torchrun_arguments(nproc, train_args)))
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        code = failure.exitcode
        how = (f"was killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals()
               else f"exited with code {code}")
        print(f"reverie: error: rank {rank} of {nproc} {how} and the job stopped its other ranks; run the same "
              "command again to resume from the last checkpoint", file=sys.stderr, flush=True)
        return 2 if code == 2 else 1
    return 0
