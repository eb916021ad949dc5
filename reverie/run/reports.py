"""Open-loop prediction reports: every `run.report_every` seconds (0: never) and at the end.

A report samples `run.report_sequences` replayed sequences with its own generator (`report_rng`,
seeded seed + 1 and checkpointed), so reports never move training's RNG draws, and asks the agent
for its open-loop predictions (`agent.report(batch)`: the model observes the first steps and
imagines the rest). Its `openloop/<key>/mse` errors go to the metrics; for image observations the
truth / model / error grid of each key goes to `videos/` (`reverie.video.openloop_videos`):

    batch   {key: (S, T, ...)}                    S = run.report_sequences, T = the replay's length
    report  openloop/<key>/truth|pred (S, T, ...), openloop/<key>/mse (0-d)
"""

from __future__ import annotations

import numpy as np

from ..agents import Agent
from ..logging import MetricsWriter
from ..replay import Replay
from .counters import Counters
from .parts import Every


class OpenLoopReports:
    def __init__(self, agent: Agent, replay: Replay, rng: np.random.Generator, writer: MetricsWriter,
                 counters: Counters, *, every: float, sequences: int):
        self.agent, self.replay, self.rng, self.writer, self.counters = agent, replay, rng, writer, counters
        self.every = every  # seconds; 0: no reports
        self.sequences = sequences
        self.timer = Every(every)

    def restart(self, now: float) -> None:
        self.timer.restart(now)

    def due(self, now: float, step: int) -> bool:
        return bool(self.every) and self.timer.due(now)

    def run(self, now: float | None = None) -> None:
        """One report, when reports are on and the agent has trained on a full replay batch."""
        if now is not None:
            self.timer.restart(now)
        if not self.every or not self.counters.updates or not self.replay.ready:
            return
        from ..video import openloop_videos  # imports imageio/Pillow only when a report is due
        batch = self.replay.sample_uniform(self.sequences, self.rng)  # {key: (S, T, ...)}
        report = self.agent.report(batch)
        step = self.counters.step
        self.writer.write(step, {k: v for k, v in report.items() if k.endswith("/mse")})
        for name, frames in openloop_videos(report).items():
            self.writer.video(step, name, frames)
