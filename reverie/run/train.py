"""The training loop: env → driver → replay → agent.train_step → metrics (DESIGN §2, §3).

    prefill with a random policy, then per vector step: act, step the envs, add to replay, and
    run as many updates as the train ratio has earned:
        updates per policy step = train_ratio / (batch_size × batch_length)
    evaluate every `run.eval_every` policy steps, checkpoint every `run.checkpoint_every` minutes
    and at the end; running again on the same logdir resumes from the newest checkpoint plus the
    replay chunks written after it (`replay_store`), even after a `kill -9`.
    An update with a non-finite loss or gradient is skipped (`train/skipped_updates`); after
    `run.max_nonfinite_updates` in a row the run stops with `TrainingError`, writing no checkpoint.
    Every `run.report_every` seconds and at the end, an open-loop prediction report: its errors
    go to the metrics and, for image observations, a video (truth / model / error) to `videos/`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from rich.console import Console

from .. import config as config_lib
from ..agents import make_agent
from ..config import Config
from ..envs import make_vec_env
from ..errors import Interrupted, TrainingError, UserError, notice
from ..logging import MetricsWriter
from ..progress import Progress
from ..replay import Replay, ReplayStore
from . import checkpoint as ckpt
from .episode_logs import EpisodeLogStats, split_log_keys
from .evaluate import EpisodeTracker, run_episodes
from .device import resolve_device
from .host_memory import retain_freed_memory
from .run_lock import hold_run_lock
from .threads import ThreadGovernor


@dataclass
class Counters:
    step: int = 0  # policy steps over all envs
    updates: int = 0
    episodes: int = 0
    credit: float = 0.0  # updates earned by the train ratio but not yet done
    next_eval: int = 0
    skipped_updates: int = 0  # updates skipped for a non-finite loss or gradient
    nonfinite_streak: int = 0  # of them, in a row up to the newest checked update


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def replay_state_to_checkpoint(state: dict) -> dict:
    """The replay's state in types that `torch.load(weights_only=True)` accepts."""
    return {**state, "rng": json.dumps(state["rng"]), "queue": torch.from_numpy(state["queue"])}


def replay_state_from_checkpoint(state: dict) -> dict:
    return {**state, "rng": json.loads(state["rng"]), "queue": state["queue"].numpy()}


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
        self.eval_envs = None
        self.agent = make_agent(self.envs.obs_space, self.envs.act_space, cfg, self.device)
        self.replay = Replay(cfg.replay.capacity, cfg.batch_size, cfg.batch_length, cfg.env.num_envs,
                             cfg.replay.online, cfg.seed)
        self.store = ReplayStore(self.logdir / "replay", self.replay, cfg.replay.chunk_length)
        self.nonfinite_flags: list[torch.Tensor] = []  # per update, not yet checked on the host
        self.recovered_steps = 0  # env steps found in replay chunks written after the checkpoint
        self.counters = Counters(next_eval=0 if cfg.run.eval_every else -1)
        self.rng = np.random.default_rng(cfg.seed)
        self.report_rng = np.random.default_rng(cfg.seed + 1)  # report batches leave training's RNG alone
        self.episode_logs = EpisodeLogStats()
        self.updates_per_step = cfg.run.train_ratio / (cfg.batch_size * cfg.batch_length)
        self.last_eval: dict[str, float] = {}

    # ------------------------------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return self.logdir / "checkpoints"

    def save(self) -> Path:
        """Replay chunks up to now first, then the checkpoint that counts them."""
        self.check_nonfinite()  # a run that is diverging stops before it writes a checkpoint
        with self.writing("the replay"):
            self.store.flush()
        payload = {
            "agent": self.agent.state_dict(),
            "counters": vars(self.counters).copy(),
            "episode_logs": self.episode_logs.state_dict(),
            "replay": replay_state_to_checkpoint(self.replay.state_dict(with_data=False)),
            "rng": {"torch": torch.get_rng_state(), "numpy": json.dumps(self.rng.bit_generator.state),
                    "report": json.dumps(self.report_rng.bit_generator.state)},
        }
        with self.writing("a checkpoint"):
            return ckpt.save_checkpoint(self.ckpt_dir, self.counters.step, payload, self.cfg.run.keep_checkpoints)

    @contextlib.contextmanager
    def writing(self, what: str):
        """Turn a failed write (disk full, permissions) into one clear error; the atomic writes
        leave every file written before intact."""
        try:
            yield
        except OSError as error:
            newest = ckpt.list_checkpoints(self.ckpt_dir)
            kept = f"; {newest[-1]} is intact" if newest else ""
            raise UserError(
                f"could not write {what} in {self.logdir} ({error.strerror or error}){kept}: free disk "
                "space (or fix the folder's permissions) and run the same command again to resume"
            ) from None

    def restore(self) -> bool:
        """Newest readable checkpoint, then the replay from the chunk files; steps of chunks written
        after the checkpoint count as taken (nothing is collected twice). False on a fresh run."""
        found = ckpt.load_latest_checkpoint(self.ckpt_dir, map_location=self.device)
        replay_state = self.replay.state_dict(with_data=False)
        if found is not None:
            path, payload = found
            ckpt.load_agent_state(self.agent, payload, path, self.logdir / "config.yaml")
            self.counters = Counters(**payload["counters"])
            self.episode_logs.load_state_dict(payload.get("episode_logs", {}))
            torch.set_rng_state(payload["rng"]["torch"].cpu())
            self.rng.bit_generator.state = json.loads(payload["rng"]["numpy"])
            self.report_rng.bit_generator.state = json.loads(payload["rng"]["report"])
            replay_state = replay_state_from_checkpoint(payload["replay"])
        recovered = self.store.restore(replay_state)
        if recovered:
            self.count_recovered(recovered)
        return found is not None or bool(recovered)

    def count_recovered(self, steps: dict[str, np.ndarray]) -> None:
        """Advance the counters over steps taken after the checkpoint and found in the replay
        chunks: {key: (num_envs, n, ...)}. Their updates are owed and run when training resumes."""
        c = self.counters
        before, c.step = c.step, c.step + steps["is_first"].size
        c.credit += self.updates_per_step * max(0, c.step - max(before, self.cfg.run.prefill))
        c.episodes += int(steps["is_last"].sum())
        self.recovered_steps = c.step - before

    # ------------------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        if self.eval_envs is None:
            # An env instance backs the training env; evaluation gets its own copy.
            spec = copy.deepcopy(self.env_spec) if isinstance(self.env_spec, gym.Env) else self.env_spec
            self.eval_envs = make_vec_env(spec, self.cfg.env, self.cfg.env.eval_envs, self.cfg.seed + 10_000)
        return run_episodes(self.agent, self.eval_envs, self.cfg.run.eval_episodes, "eval")

    def run(self) -> dict[str, Any]:
        self.logdir.mkdir(parents=True, exist_ok=True)
        with hold_run_lock(self.logdir):  # one training process per logdir
            return self._run()

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        resumed = self.restore()
        c = self.counters
        if resumed and c.step >= cfg.run.steps and c.credit < 1.0:
            notice(f"{self.logdir} is already at step {c.step:,} ≥ {cfg.run.steps:,}: nothing to do "
                   "(ask for more steps to train on)")
            return {**self.result(), "nothing_to_do": True}
        config_lib.save(cfg, self.logdir / "config.yaml")
        self.writer = MetricsWriter(self.logdir)
        # Without a live bar (--no-progress, CI, redirected output) the console gets plain lines.
        console = None if self.show_progress else Console(force_terminal=False)
        self.progress = Progress(cfg.run.steps, c.step, console=console, prefill=cfg.run.prefill)
        self.progress.log(self.replay_summary())
        rate = self.updates_per_step
        where = f"resumed {self.logdir} with its saved config at" if resumed else "started at"
        self.progress.log(f"{where} step {c.step:,}; {rate:.4g} update{'' if rate == 1 else 's'} per policy step "
                          f"(train_ratio {cfg.run.train_ratio:g})")
        if cfg.run.steps < cfg.run.prefill:
            self.progress.log(f"the run ends at step {cfg.run.steps:,}, inside the random prefill of "
                              f"{cfg.run.prefill:,} steps (run.prefill): no update will run")
        # What the next metrics row covers: the steps and updates from here.
        self.train_metrics: list[dict[str, torch.Tensor]] = []
        self.episode_stats: list[tuple[float, int]] = []
        self.last_log, self.log_step, self.log_updates = time.time(), c.step, c.updates
        if self.recovered_steps:
            self.progress.log(f"recovered {self.recovered_steps:,} env steps from replay chunks written after "
                              "the checkpoint; the updates they earned run first")
        try:
            self.loop()
            self.report()
            if cfg.run.eval_final and cfg.run.eval_episodes:
                self.evaluate_and_log(final=True)
            self.progress.log(f"checkpoint written: {self.save()}")
        except KeyboardInterrupt:
            self.write_row()  # the metrics of the steps since the last row
            path = self.save()
            self.progress.close()
            notice(f"interrupted at step {c.step:,}; checkpoint written: {path}")
            raise Interrupted() from None
        finally:
            self.progress.close()
            self.writer.close()
        return self.result()

    def result(self) -> dict[str, Any]:
        c = self.counters
        return {"step": c.step, "updates": c.updates, "episodes": c.episodes, "eval": self.last_eval,
                "logdir": str(self.logdir)}

    def loop(self) -> None:
        """Act, store, train as the ratio allows; log, evaluate and checkpoint when due."""
        cfg, c = self.cfg, self.counters
        tracker = EpisodeTracker(self.envs.num_envs)
        self.train_metrics += self.run_updates()  # the updates owed by recovered steps first
        last_ckpt = last_report = time.time()
        obs = self.envs.reset()
        state = self.agent.init_state(self.envs.num_envs)
        while c.step < cfg.run.steps:
            if c.next_eval >= 0 and c.step >= c.next_eval:
                self.evaluate_and_log()
                c.next_eval = c.step + cfg.run.eval_every
            if c.step < cfg.run.prefill:
                action = self.envs.act_space.sample_random(self.rng, self.envs.num_envs).astype(np.float32)
                extras = {k: np.zeros((self.envs.num_envs, *spec.shape), spec.dtype)
                          for k, spec in self.agent.replay_fields.items()}
            else:
                state, action, extras = self.agent.act(state, obs, "train")
            data, _ = split_log_keys(obs)
            self.replay.add({**data, "action": action, **extras})  # step t with the action taken in it
            with self.writing("the replay"):
                self.store.write_due()
            obs = self.envs.step(action)
            tracker.add(obs)
            self.episode_logs.add(split_log_keys(obs)[1], obs["is_last"])
            c.step += self.envs.num_envs
            self.train_metrics += self.train_due()
            finished = tracker.pop()
            c.episodes += len(finished)
            self.episode_stats += finished
            self.progress.update(c.step, {"updates": c.updates})
            self.threads.update()
            now = time.time()
            if now - self.last_log >= cfg.run.log_every or c.step >= cfg.run.steps:
                self.write_row(now)
            if cfg.run.report_every and now - last_report >= cfg.run.report_every:
                self.report()
                last_report = now
            if now - last_ckpt >= cfg.run.checkpoint_every * 60:
                self.save()
                last_ckpt = now

    def write_row(self, now: float | None = None) -> None:
        """One metrics row over the steps and updates since the last; the bar shows its return
        and main losses (it measures steps/s and updates/s itself)."""
        now = time.time() if now is None else now
        c = self.counters
        if c.step == self.log_step and not self.train_metrics:
            return
        self.check_nonfinite()
        row = self.summarise(self.train_metrics, self.episode_stats, now - self.last_log,
                             c.step - self.log_step, c.updates - self.log_updates)
        self.writer.write(c.step, row)
        shown = {"return": "episode/return", "rec": "loss/rec", "rew": "loss/rew", "policy": "loss/policy",
                 "value": "loss/value"}  # on the bar, in this order of priority, as far as they fit
        self.progress.update(c.step, {name: row[key] for name, key in shown.items() if key in row})
        self.train_metrics, self.episode_stats = [], []
        self.last_log, self.log_step, self.log_updates = now, c.step, c.updates

    def train_due(self) -> list[dict[str, torch.Tensor]]:
        """Run the updates the train ratio has earned since the last policy step."""
        c = self.counters
        if c.step < self.cfg.run.prefill or not self.replay.ready:
            return []
        c.credit += self.updates_per_step * self.envs.num_envs
        if c.step % self.cfg.run.train_every >= self.envs.num_envs:
            return []  # between training bursts (run.train_every): the credit accumulates
        return self.run_updates()

    def run_updates(self) -> list[dict[str, torch.Tensor]]:
        """The updates earned and not yet run (a whole credit each), with the bar following them."""
        c, metrics = self.counters, []
        if not self.replay.ready:
            return metrics
        while c.credit >= 1.0:
            metrics.append(self.agent.train_step(self.replay.sample()))
            self.nonfinite_flags.append(metrics[-1]["train/nonfinite"])
            c.updates += 1
            c.credit -= 1.0
            self.progress.update(c.step, {"updates": c.updates})
        return metrics

    def check_nonfinite(self) -> None:
        """Count the updates skipped since the last check (one host sync for all of them) and stop
        the run after `run.max_nonfinite_updates` in a row."""
        if not self.nonfinite_flags:
            return
        flags, self.nonfinite_flags = torch.stack(self.nonfinite_flags).tolist(), []
        c, limit = self.counters, self.cfg.run.max_nonfinite_updates
        for skipped in flags:
            c.skipped_updates += int(skipped)
            c.nonfinite_streak = c.nonfinite_streak + 1 if skipped else 0
            if limit and c.nonfinite_streak >= limit:
                newest = ckpt.list_checkpoints(self.ckpt_dir)
                kept = f"the last good checkpoint is {newest[-1]}" if newest else "no checkpoint was written"
                raise TrainingError(
                    f"{c.nonfinite_streak} updates in a row had a non-finite loss or gradient (at update "
                    f"{c.updates:,}, step {c.step:,}); the run stopped and {kept}. Lower optim.lr, check the "
                    "env's observations and rewards for NaN/inf, or raise run.max_nonfinite_updates"
                )

    def report(self) -> None:
        """Open-loop predictions on replayed sequences: errors as metrics, image keys as videos."""
        if not self.cfg.run.report_every or not self.counters.updates or not self.replay.ready:
            return
        from ..video import openloop_videos  # imports imageio/Pillow only when a report is due
        batch = self.replay.sample_uniform(self.cfg.run.report_sequences, self.report_rng)
        report = self.agent.report(batch)
        step = self.counters.step
        self.writer.write(step, {k: v for k, v in report.items() if k.endswith("/mse")})
        for name, frames in openloop_videos(report).items():
            self.writer.video(step, name, frames)

    def evaluate_and_log(self, final: bool = False) -> None:
        result = self.last_eval = self.evaluate()
        self.writer.write(self.counters.step, {f"eval/{k}": v for k, v in result.items()})
        where = "final" if final else f"step {self.counters.step:,}:"
        self.progress.log(f"{where} eval return {result['return_mean']:.1f} ± {result['return_std']:.1f} "
                          f"over {result['episodes']} episodes")

    def summarise(self, train_metrics, episode_stats, seconds, steps, updates) -> dict[str, float]:
        row: dict[str, float] = {
            "updates": self.counters.updates,
            "fps": steps / max(seconds, 1e-9),
            "updates_per_s": updates / max(seconds, 1e-9),
            "train_ratio_achieved": updates * self.cfg.batch_size * self.cfg.batch_length / max(steps, 1),
            "replay_steps": len(self.replay),
            "train/skipped_updates": self.counters.skipped_updates,
            "env/restarts": getattr(self.envs, "restarts", 0),
            "threads": torch.get_num_threads(),
        }
        if train_metrics:
            keys = list(train_metrics[0].keys())
            values = torch.stack([torch.stack([m[k].float() for k in keys]) for m in train_metrics])  # (U, K)
            good = values[:, keys.index("train/nonfinite")] == 0  # skipped updates' losses are NaN
            means = values[good].mean(0) if bool(good.any()) else values.mean(0)
            row.update(zip(keys, means.tolist()))
            row["train/nonfinite"] = float(1.0 - good.float().mean())  # fraction of updates skipped
        row.update(self.episode_logs.summary(bool(episode_stats)))
        if episode_stats:
            row["episode/return"] = float(np.mean([r for r, _ in episode_stats]))
            row["episode/length"] = float(np.mean([n for _, n in episode_stats]))
            row["episodes"] = self.counters.episodes
        return row

    def replay_summary(self) -> str:
        spec = {k: (tuple(s.shape), np.dtype(s.dtype)) for k, s in self.envs.obs_space.items()}
        spec.update({"action": ((self.envs.act_space.dim,), np.dtype(np.float32)),
                     "reward": ((), np.dtype(np.float32)), "is_first": ((), np.dtype(bool)),
                     "is_last": ((), np.dtype(bool)), "is_terminal": ((), np.dtype(bool))})
        per_step = Replay.estimate_bytes(spec, 1)
        total = Replay.estimate_bytes(spec, self.cfg.replay.capacity)
        return (f"replay: capacity {self.cfg.replay.capacity:,} steps × {per_step:,} B/step = "
                f"{total / 2**20:,.1f} MiB of RAM when full")

    def close(self) -> None:
        self.envs.close()
        if self.eval_envs is not None:
            self.eval_envs.close()


def train(cfg: Config, env: Any = None, progress: bool = True) -> dict[str, Any]:
    trainer = Trainer(cfg, env, progress)
    try:
        return trainer.run()
    finally:
        trainer.close()
