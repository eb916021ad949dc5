"""The shape of the training loop's parts, and the wall-clock interval most of them run on.

The loop (`train.Trainer.loop`) steps the driver and the train schedule every policy step and asks
each part, in a fixed order, whether it is due:

    part.due(now, step) → bool    now: `time.time()`; step: policy steps over all envs so far
    part.run(now)                 do it (write a metrics row, a report, a checkpoint, evaluate)

Parts run in the loop's thread and in order, so the RNG draws of a run are the same from one run
to the next: only *when* a wall-clock part runs depends on the clock.
"""

from __future__ import annotations

import time
from typing import Protocol


class Part(Protocol):
    def due(self, now: float, step: int) -> bool: ...

    def run(self, now: float | None = None) -> None: ...


class Every:
    """A wall-clock interval: `due(now)` once `seconds` have passed since the last `restart`
    (seconds ≤ 0: always due; a part with an "off" setting checks that itself)."""

    def __init__(self, seconds: float, now: float | None = None):
        self.seconds = float(seconds)
        self.last = time.time() if now is None else now

    def due(self, now: float) -> bool:
        return now - self.last >= self.seconds

    def restart(self, now: float) -> None:
        self.last = now
