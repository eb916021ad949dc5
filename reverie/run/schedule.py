"""The train-ratio schedule: how many gradient updates a run owes after each policy step.

The train ratio counts replayed steps per env step. An update trains on a batch of
B × T = `agent.batch_size` × `agent.sequence_length` steps, so each policy step earns

    updates per policy step = train_ratio / (B × T)

of credit, held in `counters.credit`; each whole credit is one update. Nothing is earned during
the random prefill (`run.prefill` steps) nor before replay holds one batch of steps (B × window length). With
`run.train_every` = K > 1 the credit accumulates and the updates run in bursts, at the steps where
the step count crosses a multiple of K.

Steps recovered from replay chunks written after the last checkpoint (a crash, `kill -9`) earn
their credit at once (`owe`); the resumed run pays those owed updates first, then goes on.
The schedule only does the arithmetic; the trainer runs the updates (`Trainer.run_updates`).
"""

from __future__ import annotations

from .counters import Counters


class TrainSchedule:
    def __init__(self, counters: Counters, train_ratio: float, batch_size: int, sequence_length: int,
                 num_envs: int, prefill: int, train_every: int = 1):
        self.counters = counters
        self.updates_per_step = train_ratio / (batch_size * sequence_length)
        self.num_envs = num_envs  # policy steps per vector step
        self.prefill = prefill
        self.train_every = train_every

    @property
    def prefilling(self) -> bool:
        """True while the run is still in its random prefill (the driver takes random actions)."""
        return self.counters.step < self.prefill

    def earn(self, replay_ready: bool) -> bool:
        """Credit the vector step just taken (the counters already count it); True when a burst of
        updates is due now."""
        c = self.counters
        if c.step < self.prefill or not replay_ready:
            return False
        c.credit += self.updates_per_step * self.num_envs
        return c.step % self.train_every < self.num_envs  # otherwise between bursts: the credit accumulates

    def owe(self, before: int, after: int) -> None:
        """Credit the steps [before, after) taken after the checkpoint and recovered from the replay
        chunks; the steps inside the prefill earn nothing."""
        self.counters.credit += self.updates_per_step * max(0, after - max(before, self.prefill))

    @property
    def owed(self) -> bool:
        """True while a whole update's credit is left."""
        return self.counters.credit >= 1.0

    def spend(self) -> None:
        """Count one update done."""
        self.counters.updates += 1
        self.counters.credit -= 1.0
