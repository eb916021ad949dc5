"""The training loop: env → driver → replay → agent.train_step → metrics (DESIGN §2, §3).

A loop made of parts. Per vector step the driver acts (random actions during the prefill), stores
the step in replay and steps the envs; the train schedule says how many updates the train ratio
has earned (each update's `replay/` outputs, the replay context's latents, go back into replay),
    updates per policy step = train_ratio / (batch_size × sequence_length),
and the trainer runs them; then each part runs when it is due:

    driver.py      envs ↔ agent ↔ replay: acting, prefill actions, replay extras, episodes
    schedule.py    the train ratio's update credit: prefill, train_every bursts, owed updates
    evaluator.py   evaluation every `run.eval_every` policy steps and at the end
    summary.py     a metrics row every `run.log_every` seconds and at the last step
    reports.py     an open-loop report (errors, videos) every `run.report_every` seconds and at the end
    resume.py      a checkpoint every `run.checkpoint_every` minutes and at the end; resuming from
                   the newest one plus the replay chunks written after it, even after a `kill -9`
    nonfinite.py   skipped non-finite updates; `run.max_nonfinite_updates` in a row stop the run
                   with `TrainingError`, writing no checkpoint

Ctrl-C writes the last metrics row and a checkpoint, then raises `Interrupted`.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from .. import config as config_lib
from ..agents import WRITE_BACK_PREFIX, make_agent
from ..config import Config
from ..envs import make_vec_env
from ..errors import Interrupted, UserError, notice
from ..logging import MetricsWriter
from ..progress import Progress
from ..replay import Replay
from .counters import Counters
from .device import resolve_device
from .driver import Driver, replay_summary
from .episode_logs import EpisodeLogStats
from .evaluator import Evaluator
from .host_memory import retain_freed_memory
from .nonfinite import NonfiniteGuard
from .parts import Part
from .reports import OpenLoopReports
from .resume import Checkpoints
from .run_lock import hold_run_lock
from .schedule import TrainSchedule
from .summary import MetricsRows
from .threads import ThreadGovernor

__all__ = ["Counters", "Trainer", "seed_everything", "train"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, cfg: Config, env: Any = None, progress: bool = True):
        if not cfg.logdir:
            raise UserError("no logdir given: set the config's logdir to the run's folder")
        self.cfg = cfg
        self.logdir = Path(cfg.logdir).expanduser()
        self.env_spec = env if env is not None else cfg.env.id
        self.show_progress = progress
        self.threads = ThreadGovernor(cfg.run.threads)  # 0: fitted to the free cores, re-fitted as the load changes
        if cfg.run.retain_memory:
            retain_freed_memory()
        seed_everything(cfg.seed)
        self.device = resolve_device(cfg.run.device)
        self.envs = make_vec_env(self.env_spec, cfg.env, cfg.env.num_envs, cfg.seed)
        self.threads.measure_now()  # after the env workers started: their work is not ours
        self.agent = make_agent(self.envs.obs_space, self.envs.act_space, cfg, self.device)
        B, T, N = self.agent.batch_size, self.agent.sequence_length, self.envs.num_envs
        C = self.agent.context_length  # windows hold C context steps before the T trained on
        self.replay = Replay(cfg.replay.capacity, B, C + T, N, cfg.replay.online, cfg.seed,
                             cfg.replay.storage, self.logdir / "replay" / "ring")
        self.counters = Counters(next_eval=0 if cfg.run.eval_every else -1)
        self.rng = np.random.default_rng(cfg.seed)  # the prefill's random actions
        self.report_rng = np.random.default_rng(cfg.seed + 1)  # report batches leave training's RNG alone
        self.episode_logs = EpisodeLogStats()
        self.schedule = TrainSchedule(self.counters, cfg.run.train_ratio, B, T, N, cfg.run.prefill, cfg.run.train_every)
        self.guard = NonfiniteGuard(self.counters, cfg.run.max_nonfinite_updates, self.logdir / "checkpoints")
        self.checkpoints = Checkpoints(
            self.logdir, self.agent, self.replay, self.counters, self.episode_logs, self.rng, self.report_rng,
            self.schedule, self.guard, chunk_length=cfg.replay.chunk_length, keep=cfg.run.keep_checkpoints,
            every_minutes=cfg.run.checkpoint_every,
            rewritable=tuple(self.agent.replay_fields) if C else ())  # the context's latents are written back
        self.store = self.checkpoints.store  # the replay on disk
        self.driver = Driver(self.envs, self.agent, self.replay, self.rng, self.episode_logs,
                             persist=self.checkpoints.write_replay_due)
        self.evaluator: Evaluator | None = None  # it and the rows and reports write: made by `run`

    # ------------------------------------------------------------------------------------------
    def save(self) -> Path:
        return self.checkpoints.save()

    def restore(self) -> bool:
        return self.checkpoints.restore(map_location=self.device)

    def run(self) -> dict[str, Any]:
        self.logdir.mkdir(parents=True, exist_ok=True)
        with hold_run_lock(self.logdir):  # one training process per logdir
            return self._run()

    def _run(self) -> dict[str, Any]:
        cfg, c = self.cfg, self.counters
        resumed = self.restore()
        if resumed and c.step >= cfg.run.steps and not self.schedule.owed:
            notice(f"{self.logdir} is already at step {c.step:,} ≥ {cfg.run.steps:,}: nothing to do "
                   "(ask for more steps to train on)")
            return {**self.result(), "nothing_to_do": True}
        config_lib.save(cfg, self.logdir / "config.yaml")
        self.open_outputs()
        self.announce(resumed)
        try:
            self.loop()
            self.reports.run()  # and one at the end
            self.evaluator.final()
            self.progress.log(f"checkpoint written: {self.save()}")
        except KeyboardInterrupt:
            self.rows.run()  # the metrics of the steps since the last row
            path = self.save()
            self.progress.close()
            notice(f"interrupted at step {c.step:,}; checkpoint written: {path}")
            raise Interrupted() from None
        finally:
            self.progress.close()
            self.writer.close()
        return self.result()

    def loop(self) -> None:
        """Act, store, train as the schedule allows; evaluate, log, report and checkpoint when due."""
        c = self.counters
        self.rows.add(self.run_updates(), [])  # the updates owed by recovered steps first
        start = time.time()
        self.reports.restart(start)
        self.checkpoints.restart(start)
        self.driver.reset()
        while c.step < self.cfg.run.steps:
            self.run_due([self.evaluator])
            finished = self.driver.step(random=self.schedule.prefilling)  # act, store, step the envs
            c.step += self.driver.num_envs
            updates = self.train_due()
            c.episodes += len(finished)
            self.rows.add(updates, finished)
            self.progress.update(c.step, {"updates": c.updates})
            self.threads.update()
            self.run_due([self.rows, self.reports, self.checkpoints])

    def run_due(self, parts: list[Part]) -> None:
        """Run each part that is due now, in the order given."""
        now, step = time.time(), self.counters.step
        for part in parts:
            if part.due(now, step):
                part.run(now)

    def train_due(self) -> list[dict[str, torch.Tensor]]:
        """The updates the train ratio has earned with the policy step just taken, when a burst is due."""
        if not self.schedule.earn(self.replay.holds_batch):
            return []
        return self.run_updates()

    def run_updates(self) -> list[dict[str, torch.Tensor]]:
        """The updates earned and not yet run (a whole credit each), with the bar following them;
        their metrics, {name: 0-d tensor} per update, stay on the device."""
        metrics: list[dict[str, torch.Tensor]] = []
        if not self.replay.ready:
            return metrics
        while self.schedule.owed:
            batch, env, start = self.replay.sample_windows()  # a (B, C + T) batch and where it lies
            metrics.append(self.agent.train_step(batch))
            self.write_back(metrics[-1], env, start)
            self.guard.watch(metrics[-1])
            self.schedule.spend()
            self.progress.update(self.counters.step, {"updates": self.counters.updates})
        return metrics

    def write_back(self, metrics: dict[str, torch.Tensor], env: np.ndarray, start: np.ndarray) -> None:
        """Move the update's `replay/` outputs (B, T, ...) out of its metrics into the replay steps
        after the batch's context (the replay context's recomputed latents)."""
        keys = [key for key in metrics if key.startswith(WRITE_BACK_PREFIX)]
        if keys:
            steps = {key[len(WRITE_BACK_PREFIX):]: metrics.pop(key).cpu().numpy() for key in keys}
            self.replay.write_back(env, start + self.agent.context_length, steps)

    # ------------------------------------------------------------------------------------------
    def open_outputs(self) -> None:
        """The metrics file, the console and the parts that write to them."""
        cfg, c = self.cfg, self.counters
        self.writer = MetricsWriter(self.logdir)
        # Without a live bar (--no-progress, CI, redirected output) the console gets plain lines.
        console = None if self.show_progress else Console(force_terminal=False)
        self.progress = Progress(cfg.run.steps, c.step, console=console, prefill=cfg.run.prefill)
        self.evaluator = Evaluator(cfg, self.env_spec, self.agent, c, self.writer, self.progress)
        self.reports = OpenLoopReports(self.agent, self.replay, self.report_rng, self.writer, c,
                                       every=cfg.run.report_every, sequences=cfg.run.report_sequences)
        self.rows = MetricsRows(c, self.writer, self.progress, self.guard, self.replay, self.envs, self.episode_logs,
                                samples_per_update=self.agent.batch_size * self.agent.sequence_length,
                                log_every=cfg.run.log_every, last_step=cfg.run.steps)

    def announce(self, resumed: bool) -> None:
        cfg, c, rate = self.cfg, self.counters, self.schedule.updates_per_step
        self.progress.log(replay_summary(self.envs, self.agent.replay_fields, cfg.replay.capacity,
                                         cfg.replay.storage, self.logdir / "replay" / "ring"))
        where = f"resumed {self.logdir} with its saved config at" if resumed else "started at"
        self.progress.log(f"{where} step {c.step:,}; {rate:.4g} update{'' if rate == 1 else 's'} per policy step "
                          f"(train_ratio {cfg.run.train_ratio:g})")
        if cfg.run.steps < cfg.run.prefill:
            self.progress.log(f"the run ends at step {cfg.run.steps:,}, inside the random prefill of "
                              f"{cfg.run.prefill:,} steps (run.prefill): no update will run")
        if self.checkpoints.recovered_steps:
            self.progress.log(f"recovered {self.checkpoints.recovered_steps:,} env steps from replay chunks "
                              "written after the checkpoint; the updates they earned run first")

    def result(self) -> dict[str, Any]:
        c = self.counters
        return {"step": c.step, "updates": c.updates, "episodes": c.episodes,
                "eval": self.evaluator.last if self.evaluator else {}, "logdir": str(self.logdir)}

    def close(self) -> None:
        self.envs.close()
        if self.evaluator is not None:
            self.evaluator.close()


def train(cfg: Config, env: Any = None, progress: bool = True) -> dict[str, Any]:
    trainer = Trainer(cfg, env, progress)
    try:
        return trainer.run()
    finally:
        trainer.close()
