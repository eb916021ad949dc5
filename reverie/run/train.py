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

Data-parallel (`torchrun`, `reverie train --nproc W`; `reverie.distributed`): every rank runs this
loop in lockstep with its own N envs (seeded by rank), its own replay shard of capacity/W steps and
B/W of the global batch B per update, the gradients averaged over the ranks. The counters count
the whole job: a vector step is N·W env steps, so `run.steps`, `run.prefill`, `run.eval_every` and
the train ratio (replayed steps per env step, over B·T) mean what they mean for one process.
Rank 0 writes the metrics, evaluations, reports, config and the agent's checkpoints in the logdir;
rank r > 0 writes only its replay shard and its own state under `logdir/ranks/<r>/`. The moments
that depend on the clock (a metrics row, a checkpoint) are rank 0's, shared with the others.
"""

from __future__ import annotations

import copy
import pickle
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from .. import config as config_lib
from .. import distributed
from ..agents import WRITE_BACK_PREFIX, make_agent
from ..config import Config
from ..envs import make_vec_env
from ..errors import Interrupted, UserError, notice
from ..logging import MetricsWriter
from ..progress import Progress
from ..replay import Replay
from .actors import BACKENDS, ActorEnvs
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
        seed_everything(cfg.seed)  # the agent's initial weights: the same on every rank
        device = resolve_device(cfg.run.device)
        self.world = world = distributed.join(device)
        self.device = world.device(device)
        # rank 0 writes in the logdir; rank r > 0 its replay shard and state in logdir/ranks/<r>
        self.shard = self.logdir if world.main else self.logdir / "ranks" / str(world.rank)
        seed = world.seed(cfg.seed)  # envs, replay sampling and actions differ between ranks
        if cfg.env.backend == "inline":
            self.envs = make_vec_env(self.env_spec, cfg.env, cfg.env.num_envs, seed)
        else:  # an actor steps them apart from the learner (actors.py); here only their spaces
            check_actor_spec(self.env_spec, cfg.env.backend)
            self.envs = ActorEnvs(self.env_spec, cfg, seed)
        self.threads.measure_now()  # after the env workers started: their work is not ours
        agent_cfg = per_rank_config(cfg, world)
        self.agent = make_agent(self.envs.obs_space, self.envs.act_space, agent_cfg, self.device)
        distributed.broadcast_state(self.agent)
        if not world.main:
            seed_everything(seed)
        B, T, N = self.agent.batch_size, self.agent.sequence_length, self.envs.num_envs
        C = self.agent.context_length  # windows hold C context steps before the T trained on
        self.replay = Replay(cfg.replay.capacity // world.size, B, C + T, N, cfg.replay.online, seed,
                             cfg.replay.storage, self.shard / "replay" / "ring")
        self.counters = Counters(next_eval=0 if cfg.run.eval_every else -1)
        self.rng = np.random.default_rng(seed)  # the prefill's random actions
        self.report_rng = np.random.default_rng(seed + 1)  # report batches leave training's RNG alone
        self.episode_logs = EpisodeLogStats()
        self.schedule = TrainSchedule(self.counters, cfg.run.train_ratio, B * world.size, T, N * world.size,
                                      cfg.run.prefill, cfg.run.train_every)  # the job's batch and vector step
        self.guard = NonfiniteGuard(self.counters, cfg.run.max_nonfinite_updates, self.logdir / "checkpoints")
        self.checkpoints = Checkpoints(
            self.shard, self.agent, self.replay, self.counters, self.episode_logs, self.rng, self.report_rng,
            self.schedule, self.guard, chunk_length=cfg.replay.chunk_length, keep=cfg.run.keep_checkpoints,
            every_minutes=cfg.run.checkpoint_every,
            rewritable=tuple(self.agent.replay_fields) if C else (),  # the context's latents are written back
            agent_folder=None if world.main else self.logdir / "checkpoints")  # rank 0 saves the agent
        self.store = self.checkpoints.store  # the replay on disk
        self.actor = None
        if cfg.env.backend != "inline":
            self.actor = BACKENDS[cfg.env.backend](self.env_spec, agent_cfg, seed, self.agent, self.counters,
                                                   self.envs, step_size=N * world.size)
        self.driver = Driver(self.envs, self.agent, self.replay, self.rng, self.episode_logs,
                             persist=self.checkpoints.write_replay_due, source=self.actor)
        self.evaluator: Evaluator | None = None  # it and the rows and reports write: made by `run`

    # ------------------------------------------------------------------------------------------
    def save(self) -> Path:
        return self.checkpoints.save()

    def restore(self) -> bool:
        return self.checkpoints.restore(map_location=self.device)

    def run(self) -> dict[str, Any]:
        self.shard.mkdir(parents=True, exist_ok=True)
        with hold_run_lock(self.shard):  # one training process per logdir (per rank's shard)
            return self._run()

    def _run(self) -> dict[str, Any]:
        cfg, c = self.cfg, self.counters
        resumed = self.restore()
        if resumed and c.step >= cfg.run.steps and not self.schedule.owed:
            if self.world.main:
                notice(f"{self.logdir} is already at step {c.step:,} ≥ {cfg.run.steps:,}: nothing to do "
                       "(ask for more steps to train on)")
            return {**self.result(), "nothing_to_do": True}
        if self.world.main:
            config_lib.save(cfg, self.logdir / "config.yaml")
        self.open_outputs()
        self.announce(resumed)
        try:
            self.loop()
            if self.world.main:
                self.reports.run()  # and one at the end
                self.evaluator.final()
            self.progress.log(f"checkpoint written: {self.save()}")
        except KeyboardInterrupt:
            if self.world.main:
                self.rows.run()  # the metrics of the steps since the last row
            path = self.save()
            self.progress.close()
            notice(f"interrupted at step {c.step:,}; checkpoint written: {path}")
            raise Interrupted() from None
        finally:
            self.progress.close()
            if self.writer is not None:
                self.writer.close()
        return self.result()

    def loop(self) -> None:
        """Act, store, train as the schedule allows; evaluate, log, report and checkpoint when due."""
        c = self.counters
        owed = self.run_updates()  # the updates owed by recovered steps first
        start = time.time()
        if self.world.main:
            self.rows.add(owed, [])
            self.reports.restart(start)
        self.checkpoints.restart(start)
        self.driver.reset()
        while c.step < self.cfg.run.steps:
            if self.world.main:
                self.run_due([self.evaluator])
            finished = self.driver.step(random=self.schedule.prefilling)  # act, store, step the envs
            c.step += self.driver.num_envs * self.world.size
            updates = self.train_due()
            c.episodes += len(finished)
            if self.world.main:
                self.rows.add(updates, finished)
            self.progress.update(c.step, {"updates": c.updates})
            self.threads.update()
            self.run_due_after_step()

    def run_due(self, parts: list[Part]) -> None:
        """Run each part that is due now, in the order given."""
        now, step = time.time(), self.counters.step
        for part in parts:
            if part.due(now, step):
                part.run(now)

    def run_due_after_step(self) -> None:
        """The metrics row, the open-loop report and the checkpoint, each when due. Data-parallel,
        rank 0's clock says when a row and a checkpoint are due on every rank: at a row every rank
        checks the non-finite guard (a diverging job stops everywhere at once; rank 0 writes the row),
        at a checkpoint every rank saves its part; the report is rank 0's alone."""
        if not self.world.distributed:
            self.run_due([self.rows, self.reports, self.checkpoints])
            return
        now, step, main = time.time(), self.counters.step, self.world.main
        row, save = distributed.all_min(
            [int(self.rows.due(now, step)), int(self.checkpoints.due(now, step))] if main else [1, 1])
        if row:
            self.rows.run(now) if main else self.guard.check()
        if main and self.reports.due(now, step):
            self.reports.run(now)
        if save:
            self.checkpoints.run(now)

    def train_due(self) -> list[dict[str, torch.Tensor]]:
        """The updates the train ratio has earned with the policy step just taken, when a burst is due."""
        if not self.schedule.earn(self.replay.holds_batch):
            return []
        updates = self.run_updates()
        if self.actor is not None:
            self.actor.refresh_due()  # the actor's policy copy, every env.policy_every updates
        return updates

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
        """The metrics file, the console and the parts that write to them (on rank 0; the other
        ranks only have a silent progress counter)."""
        cfg, c = self.cfg, self.counters
        if not self.world.main:
            self.progress = Progress(cfg.run.steps, c.step, enabled=False, console=Console(quiet=True))
            self.writer = self.evaluator = self.reports = self.rows = None
            return
        self.writer = MetricsWriter(self.logdir)
        # Without a live bar (--no-progress, CI, redirected output) the console gets plain lines.
        console = None if self.show_progress else Console(force_terminal=False)
        self.progress = Progress(cfg.run.steps, c.step, console=console, prefill=cfg.run.prefill)
        self.evaluator = Evaluator(cfg, self.env_spec, self.agent, c, self.writer, self.progress)
        self.reports = OpenLoopReports(self.agent, self.replay, self.report_rng, self.writer, c,
                                       every=cfg.run.report_every, sequences=cfg.run.report_sequences)
        self.rows = MetricsRows(c, self.writer, self.progress, self.guard, self.replay, self.envs, self.episode_logs,
                                samples_per_update=self.agent.batch_size * self.world.size * self.agent.sequence_length,
                                log_every=cfg.run.log_every, last_step=cfg.run.steps, shards=self.world.size,
                                actor=self.actor)

    def announce(self, resumed: bool) -> None:
        cfg, c, rate = self.cfg, self.counters, self.schedule.updates_per_step
        if not self.world.main:
            return
        if self.world.distributed:
            self.progress.log(f"data-parallel over {self.world.size} ranks: each with {self.envs.num_envs} env(s), "
                              f"a replay shard of {cfg.replay.capacity // self.world.size:,} steps and "
                              f"{self.agent.batch_size} of the batch's {cfg.batch_size} sequences per update")
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
        if self.actor is not None:
            self.actor.close()
        self.envs.close()
        if self.evaluator is not None:
            self.evaluator.close()


def check_actor_spec(spec: Any, backend: str) -> None:
    """An actor builds its envs in another process: from an id, or a factory that pickles."""
    if isinstance(spec, str):
        return
    try:
        pickle.dumps(spec)
    except Exception:  # noqa: BLE001 - whatever pickling raises, the spec cannot travel
        raise UserError(f"env.backend={backend} builds the envs in another process and cannot take this env object "
                        f"({type(spec).__name__}, not picklable): pass a registered env id or a module-level factory, "
                        "or set env.backend=inline") from None


def per_rank_config(cfg: Config, world: distributed.World) -> Config:
    """The config each rank's agent is built from: `batch_size` is the job's batch B, a rank's is B/W."""
    if not world.distributed:
        return cfg
    if cfg.batch_size % world.size:
        raise UserError(f"batch_size {cfg.batch_size} does not split over {world.size} ranks: set batch_size to a "
                        f"multiple of {world.size} (the job's batch; each rank trains on batch_size / {world.size})")
    local = copy.deepcopy(cfg)
    local.batch_size = cfg.batch_size // world.size
    return local


def train(cfg: Config, env: Any = None, progress: bool = True) -> dict[str, Any]:
    trainer = None
    try:
        trainer = Trainer(cfg, env, progress)
        return trainer.run()
    finally:
        if trainer is not None:
            trainer.close()
        distributed.leave()
