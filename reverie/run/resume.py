"""Checkpoints of a training run and resuming from them, even after a `kill -9`.

`save` writes the replay's steps up to now as chunk files first (`logdir/replay/`, ReplayStore),
then the checkpoint that counts them (`logdir/checkpoints/ckpt_<step>.pt`, checkpoint.py):

    agent         agent.state_dict(): weights, optimisers, normalisers, target networks
    counters      vars(Counters): step, updates, episodes, train-ratio credit, next_eval, …
    episode_logs  the achievement totals of EpisodeLogStats
    replay        the replay's state without its data: counters, sampling RNG, online queue
    rng           torch's global RNG state; "numpy": the trainer's generator (prefill actions);
                  "report": the open-loop reports' generator

`restore` loads the newest readable checkpoint, then rebuilds the replay from the chunks. Complete
chunks written after that checkpoint hold steps the crashed run took: they count as taken
(`count_recovered`: step and episode counters move past them) and the updates they earned are
owed (`TrainSchedule.owe`), so the resumed run ends where an uninterrupted one would have.

As a loop part, a checkpoint is due every `run.checkpoint_every` minutes. A non-finite guard
check comes before every save, so a diverging run never writes a checkpoint.

Data-parallel, every rank saves at the same step: rank 0 the whole payload in `logdir`, rank r > 0
the same without the agent (the weights are rank 0's) in `logdir/ranks/<r>`, each with its replay
shard's chunks; "world" records the world size. A resume needs the same world size; the ranks
restore the newest checkpoint step that all of them hold, rank r > 0 takes the agent from rank 0's
file of that step, and the chunks written after it are recovered only as far as every shard
reaches, so the ranks go on in step and no env step is counted twice.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import torch

from .. import distributed
from ..agents import Agent
from ..errors import CheckpointError, UserError
from ..replay import Replay, ReplayStore
from . import checkpoint as ckpt
from .counters import Counters
from .episode_logs import EpisodeLogStats
from .nonfinite import NonfiniteGuard
from .parts import Every
from .schedule import TrainSchedule


def replay_state_to_checkpoint(state: dict) -> dict:
    """The replay's state in types that `torch.load(weights_only=True)` accepts."""
    return {**state, "rng": json.dumps(state["rng"]), "queue": torch.from_numpy(state["queue"])}


def replay_state_from_checkpoint(state: dict) -> dict:
    return {**state, "rng": json.loads(state["rng"]), "queue": state["queue"].numpy()}


def saved_world_size(logdir: Path) -> int | None:
    """How many ranks wrote the newest checkpoint in `logdir` (None: no readable checkpoint)."""
    for path in reversed(ckpt.list_checkpoints(Path(logdir) / "checkpoints")):
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # reads little
        except Exception:  # noqa: BLE001, S112 - the run itself says which checkpoint is unreadable
            continue
        return int(payload.get("world", {"size": 1})["size"])
    return None


class Checkpoints:
    def __init__(self, logdir: Path, agent: Agent, replay: Replay, counters: Counters,
                 episode_logs: EpisodeLogStats, rng: np.random.Generator, report_rng: np.random.Generator,
                 schedule: TrainSchedule, guard: NonfiniteGuard, *, chunk_length: int, keep: int,
                 every_minutes: float, rewritable: tuple[str, ...] = (), agent_folder: Path | None = None):
        self.logdir = logdir
        self.agent_folder = agent_folder  # rank r > 0: the folder whose checkpoints hold the agent (rank 0's)
        self.world = distributed.current()
        self.folder = logdir / "checkpoints"
        self.agent, self.replay, self.counters, self.episode_logs = agent, replay, counters, episode_logs
        self.rng, self.report_rng = rng, report_rng
        self.schedule, self.guard = schedule, guard
        self.store = ReplayStore(logdir / "replay", replay, chunk_length, rewritable)
        self.keep = keep
        self.timer = Every(every_minutes * 60)
        self.recovered_steps = 0  # env steps found in replay chunks written after the checkpoint

    # ------------------------------------------------------------------------------------------
    def save(self) -> Path:
        """Replay chunks up to now first, then the checkpoint that counts them."""
        self.guard.check()  # a run that is diverging stops before it writes a checkpoint
        with self.writing("the replay"):
            self.store.flush()
        payload = {
            "world": {"size": self.world.size, "rank": self.world.rank},
            "counters": self.counters.state_dict(),
            "episode_logs": self.episode_logs.state_dict(),
            "replay": replay_state_to_checkpoint(self.replay.state_dict(with_data=False)),
            "rng": {"torch": torch.get_rng_state(), "numpy": json.dumps(self.rng.bit_generator.state),
                    "report": json.dumps(self.report_rng.bit_generator.state)},
        }
        if self.agent_folder is None:
            payload["agent"] = self.agent.state_dict()
        with self.writing("a checkpoint"):
            return ckpt.save_checkpoint(self.folder, self.counters.step, payload, self.keep)

    def write_replay_due(self) -> None:
        """The replay chunks that are complete (the driver calls this after every add)."""
        with self.writing("the replay"):
            self.store.write_due()

    @contextlib.contextmanager
    def writing(self, what: str):
        """Turn a failed write (disk full, permissions) into one clear error; the atomic writes
        leave every file written before intact."""
        try:
            yield
        except OSError as error:
            newest = ckpt.list_checkpoints(self.folder)
            kept = f"; {newest[-1]} is intact" if newest else ""
            raise UserError(
                f"could not write {what} in {self.logdir} ({error.strerror or error}){kept}: free disk "
                "space (or fix the folder's permissions) and run the same command again to resume"
            ) from None

    # ------------------------------------------------------------------------------------------
    def restore(self, map_location="cpu") -> bool:
        """Newest readable checkpoint, then the replay from the chunk files; steps of chunks written
        after the checkpoint count as taken (nothing is collected twice). False on a fresh run."""
        found = ckpt.load_latest_checkpoint(self.folder, map_location=map_location)
        if found is not None:
            self.check_world(found[1], found[0])
        if self.world.distributed:
            found = self.agreed_checkpoint(found, map_location)
        replay_state = self.replay.state_dict(with_data=False)
        if found is not None:
            path, payload = found
            agent_payload = payload
            if self.agent_folder is not None:  # rank r > 0: rank 0's file of the same step holds the agent
                path = self.agent_folder / path.name
                agent_payload = ckpt.load_checkpoint(path, map_location=map_location)
            ckpt.load_agent_state(self.agent, agent_payload, path, self.config_path)
            self.counters.load_state_dict(payload["counters"])
            self.episode_logs.load_state_dict(payload.get("episode_logs", {}))
            torch.set_rng_state(payload["rng"]["torch"].cpu())
            self.rng.bit_generator.state = json.loads(payload["rng"]["numpy"])
            self.report_rng.bit_generator.state = json.loads(payload["rng"]["report"])
            replay_state = replay_state_from_checkpoint(payload["replay"])
        until = None
        if self.world.distributed:  # recover only the steps every shard holds: the ranks stay in step
            until, = distributed.all_min([self.store.recoverable(int(replay_state["added"]))])
        recovered = self.store.restore(replay_state, until)
        if self.world.distributed:
            count = recovered["is_first"].shape[1] if recovered else 0
            if distributed.all_min([count]) != [count]:
                raise CheckpointError(
                    f"the replay chunks of rank {self.world.rank} after its checkpoint do not match the other ranks' "
                    f"(an unreadable chunk in {self.store.folder}); move the chunks written after the newest "
                    "checkpoint of every rank aside and resume again")
        if recovered:
            self.count_recovered(recovered)
        return found is not None or bool(recovered)

    @property
    def config_path(self) -> Path:
        return (self.agent_folder.parent if self.agent_folder is not None else self.logdir) / "config.yaml"

    def agreed_checkpoint(self, found: tuple[Path, dict] | None, map_location) -> tuple[Path, dict] | None:
        """Data-parallel: the checkpoint of the newest step that every rank holds (a rank whose newest
        is later, having saved before another rank crashed, goes back to that step's file)."""
        step = found[1]["counters"]["step"] if found is not None else -1
        agreed, = distributed.all_min([step])
        newest, = distributed.all_min([-step])
        if -newest == agreed == step:
            return found
        if agreed < 0:
            raise CheckpointError(
                f"rank {self.world.rank} of this data-parallel run has {'a checkpoint' if step >= 0 else 'none'} "
                f"in {self.folder} but another rank {'has none' if step >= 0 else 'has one'}; resume with every "
                "rank's folder in place (logdir and logdir/ranks/<r>), or start a new logdir")
        path = self.folder / ckpt.checkpoint_name(agreed)
        if not path.is_file():
            raise CheckpointError(f"rank {self.world.rank} has no checkpoint of step {agreed:,} ({path}), the newest "
                                  "that every rank holds; restore it from a backup, or start a new logdir")
        return path, ckpt.load_checkpoint(path, map_location=map_location)

    def check_world(self, payload: dict, path: Path) -> None:
        """A run resumes with the world size it was trained with."""
        saved = payload.get("world", {"size": 1})["size"]
        if saved != self.world.size:
            how = "without --nproc (one process)" if saved == 1 else f"with --nproc {saved} (or torchrun --nproc-per-node)"
            raise UserError(
                f"{path} was written by a run of {saved} rank(s) and this one has {self.world.size}: resume it {how}; "
                "a replay split into shards is not re-split")

    def count_recovered(self, steps: dict[str, np.ndarray]) -> None:
        """Advance the counters over steps taken after the checkpoint and found in the replay
        chunks: {key: (num_envs, n, ...)}. Their updates are owed and run when training resumes."""
        c = self.counters
        before, c.step = c.step, c.step + steps["is_first"].size
        self.schedule.owe(before, c.step)
        c.episodes += int(steps["is_last"].sum())
        self.recovered_steps = c.step - before

    # ------------------------------------------------------------------------------------------ as a loop part
    def restart(self, now: float) -> None:
        self.timer.restart(now)

    def due(self, now: float, step: int) -> bool:
        return self.timer.due(now)

    def run(self, now: float | None = None) -> None:
        self.save()
        if now is not None:
            self.timer.restart(now)
