"""Metrics rows: one line of `metrics.jsonl` (and TensorBoard) over the steps and updates since the
last row, every `run.log_every` seconds and at the run's last step.

A row holds, always:
    updates, fps, updates_per_s, train_ratio_achieved, replay_steps, train/skipped_updates,
    env/restarts, threads
then, when updates ran in the window, the mean of each of the agent's `train_step` metrics over
the updates that were not skipped (a skipped update's losses are NaN) and `train/nonfinite`, the
fraction skipped; the `episode/<log>` means and `achievements/…` of EpisodeLogStats; and, when
episodes finished, episode/return, episode/length (means over them) and episodes (the total).

The window's updates stay on the device until the row is written (one host sync per row); the
non-finite guard reads their flags first. The progress bar shows the row's return and main losses.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ..logging import MetricsWriter
from ..progress import Progress
from ..replay import Replay
from .counters import Counters
from .episode_logs import EpisodeLogStats
from .nonfinite import NonfiniteGuard
from .parts import Every

SHOWN = {"return": "episode/return", "rec": "loss/rec", "rew": "loss/rew", "policy": "loss/policy",
         "value": "loss/value"}  # on the bar, in this order of priority, as far as they fit


class MetricsRows:
    def __init__(self, counters: Counters, writer: MetricsWriter, progress: Progress, guard: NonfiniteGuard,
                 replay: Replay, envs: Any, episode_logs: EpisodeLogStats, *, samples_per_update: int,
                 log_every: float, last_step: int, shards: int = 1, actor: Any = None):
        self.counters, self.writer, self.progress, self.guard = counters, writer, progress, guard
        self.replay, self.envs, self.episode_logs = replay, envs, episode_logs
        self.samples_per_update = samples_per_update  # B × T replayed steps per update (the job's B)
        self.shards = shards  # data-parallel: W replay shards of the same length; the episodes are rank 0's
        self.actor = actor  # env.backend process / ray: its policy's lag is reported
        self.last_step = last_step  # the run's end: a row is always written there
        self.timer = Every(log_every)
        # The window the next row covers: from here.
        self.train_metrics: list[dict[str, torch.Tensor]] = []  # per update, {name: 0-d tensor}
        self.episode_stats: list[tuple[float, int]] = []  # per finished episode, (return, length)
        self.log_step, self.log_updates = counters.step, counters.updates

    def add(self, train_metrics: list[dict[str, torch.Tensor]], episodes: list[tuple[float, int]]) -> None:
        self.train_metrics += train_metrics
        self.episode_stats += episodes

    def due(self, now: float, step: int) -> bool:
        return self.timer.due(now) or step >= self.last_step

    def run(self, now: float | None = None) -> None:
        """Write one row over the window (none when nothing happened since the last); the bar
        shows its return and main losses (it measures steps/s and updates/s itself)."""
        now = time.time() if now is None else now
        c = self.counters
        if c.step == self.log_step and not self.train_metrics:
            return
        self.guard.check()
        row = self.summarise(now - self.timer.last, c.step - self.log_step, c.updates - self.log_updates)
        self.writer.write(c.step, row)
        self.progress.update(c.step, {name: row[key] for name, key in SHOWN.items() if key in row})
        self.train_metrics, self.episode_stats = [], []
        self.timer.restart(now)
        self.log_step, self.log_updates = c.step, c.updates

    def summarise(self, seconds: float, steps: int, updates: int) -> dict[str, float]:
        row: dict[str, float] = {
            "updates": self.counters.updates,
            "fps": steps / max(seconds, 1e-9),
            "updates_per_s": updates / max(seconds, 1e-9),
            "train_ratio_achieved": updates * self.samples_per_update / max(steps, 1),
            "replay_steps": len(self.replay) * self.shards,
            "train/skipped_updates": self.counters.skipped_updates,
            "env/restarts": getattr(self.envs, "restarts", 0),
            "threads": torch.get_num_threads(),
        }
        if self.actor is not None:  # updates between the learner's weights and those the newest step acted with
            row["actor/policy_lag"] = self.counters.updates - self.actor.acted_with
        if self.train_metrics:
            row.update(mean_train_metrics(self.train_metrics))
        row.update(self.episode_logs.summary(bool(self.episode_stats)))
        if self.episode_stats:
            row["episode/return"] = float(np.mean([r for r, _ in self.episode_stats]))
            row["episode/length"] = float(np.mean([n for _, n in self.episode_stats]))
            row["episodes"] = self.counters.episodes
        return row


def mean_train_metrics(train_metrics: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Each metric's mean over the updates that were not skipped (over all when every one was),
    and `train/nonfinite`: the fraction skipped."""
    keys = list(train_metrics[0].keys())
    values = torch.stack([torch.stack([m[k].float() for k in keys]) for m in train_metrics])  # (U, K)
    good = values[:, keys.index("train/nonfinite")] == 0  # (U,); skipped updates' losses are NaN
    means = values[good].mean(0) if bool(good.any()) else values.mean(0)  # (K,)
    row = dict(zip(keys, means.tolist()))
    row["train/nonfinite"] = float(1.0 - good.float().mean())
    return row
