"""The non-finite guard: count skipped updates and stop a diverging run.

An update whose loss or gradient is not finite is skipped by the agent, which reports it as the
0-d device tensor `train/nonfinite` (1: skipped). The guard keeps those flags without a host sync
(`watch`) and reads them all at once (`check`) before a metrics row or a checkpoint is written:
it adds them to `counters.skipped_updates` and, after `run.max_nonfinite_updates` skipped in a
row (0: never), raises `TrainingError`. Because a checkpoint checks first, a diverging run stops
before it writes one; the last good checkpoint stays the newest.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import TrainingError
from . import checkpoint as ckpt
from .counters import Counters


class NonfiniteGuard:
    def __init__(self, counters: Counters, limit: int, checkpoint_dir: Path):
        self.counters = counters
        self.limit = limit
        self.checkpoint_dir = checkpoint_dir  # named in the error: the last good checkpoint
        self.flags: list[torch.Tensor] = []  # per update, a 0-d tensor, not yet checked on the host

    def watch(self, metrics: dict[str, torch.Tensor]) -> None:
        """Keep one update's `train/nonfinite` flag for the next check."""
        self.flags.append(metrics["train/nonfinite"])

    def check(self) -> None:
        """Count the updates skipped since the last check (one host sync for all of them) and stop
        the run after `limit` in a row."""
        if not self.flags:
            return
        flags, self.flags = torch.stack(self.flags).tolist(), []  # (U,)
        c = self.counters
        for skipped in flags:
            c.skipped_updates += int(skipped)
            c.nonfinite_streak = c.nonfinite_streak + 1 if skipped else 0
            if self.limit and c.nonfinite_streak >= self.limit:
                newest = ckpt.list_checkpoints(self.checkpoint_dir)
                kept = f"the last good checkpoint is {newest[-1]}" if newest else "no checkpoint was written"
                raise TrainingError(
                    f"{c.nonfinite_streak} updates in a row had a non-finite loss or gradient (at update "
                    f"{c.updates:,}, step {c.step:,}); the run stopped and {kept}. Lower optim.lr, check the "
                    "env's observations and rewards for NaN/inf, or raise run.max_nonfinite_updates"
                )
