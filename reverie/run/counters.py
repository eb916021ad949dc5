"""The run's counters: how far a training run has got, shared by the loop's parts.

One `Counters` object lives for the whole run; the driver's steps, the train schedule's credit,
the evaluation schedule and the non-finite guard all advance it, and every checkpoint saves it
(payload key "counters", as `vars(counters)`). Restoring loads a checkpoint's values into the same
object (`load`), so every part keeps seeing the live counters.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Counters:
    step: int = 0  # policy steps over all envs
    updates: int = 0
    episodes: int = 0
    credit: float = 0.0  # updates earned by the train ratio but not yet done
    next_eval: int = 0  # the step of the next evaluation; -1: none during the run
    skipped_updates: int = 0  # updates skipped for a non-finite loss or gradient
    nonfinite_streak: int = 0  # of them, in a row up to the newest checked update

    def state_dict(self) -> dict:
        return vars(self).copy()

    def load_state_dict(self, state: dict) -> None:
        """Take a checkpoint's counters in place (unknown keys raise, as `Counters(**state)` does)."""
        for key, value in vars(Counters(**state)).items():
            setattr(self, key, value)
