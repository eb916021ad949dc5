"""Actors apart from the learner: the envs step (and render) in another process, or on a Ray
cluster, while the learner trains (`env.backend`: inline | process | ray).

The actor holds the envs and a copy of the agent (CPU, acting only) and runs `driver.Acting`: it
picks the actions, steps the envs and sends each vector step to the learner, up to
`env.actor_queue` vector steps ahead of it; the learner stores them in replay and trains as the
train ratio says (`Driver` with a `source`), so the ratio holds exactly, and sends its weights to
the actor every `env.policy_every` updates (the copy acts with weights at most that many updates,
plus the queue's steps, old). The actor takes random actions while the job's step count is inside
the prefill, as the inline driver does.

    process   one spawned process on this machine (torch.multiprocessing queues; tensors travel
              through shared memory)
    ray       a Ray actor (`ray.remote`), on this machine's local Ray or the cluster at
              `env.ray_address`; steps come in calls of `RAY_CHUNK` vector steps, one call always
              in flight

What an actor buys: the learner's updates overlap acting, env stepping and rendering instead of
alternating with them, given a free core. Measured on 2 CPU cores (benchmarks/scaling.py): 1.69×
the env steps/s on DMC from pixels (rendering ~50–70 frames/s per core), 1.13× on CartPole, where
only the policy's forward pass moves off the learner. The run is then not bit-for-bit reproducible (the actor runs
ahead by however far the clock lets it); a resumed run restarts the actor with fresh episodes.
"""

from __future__ import annotations

import queue
import signal
import traceback
from typing import Any

import numpy as np
import torch

from ..agents import make_agent
from ..config import Config
from ..envs import make_env, make_vec_env
from ..errors import EnvError, UserError
from .counters import Counters
from .driver import Acting
from .episode_logs import LOG_PREFIX

SMALL_KEYS = ("reward", "is_first", "is_last", "is_terminal")  # what the learner reads of step t + 1
RAY_CHUNK = 16  # vector steps per Ray call
WAIT_S = 1.0  # the learner checks the actor is alive this often while it waits for a step


def weights_of(agent: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the agent's weights (no optimiser state) on the CPU, for an actor's policy."""
    return {k: v.detach().to("cpu", copy=True) for k, v in torch.nn.Module.state_dict(agent).items()}


class ActorCore:
    """The envs and a policy copy: `run(n)` takes n vector steps and returns them as records
    (stored step t, the flags, reward and `log/` keys of step t + 1, env restarts so far, the
    learner's update count that the acting weights come from)."""

    def __init__(self, spec: Any, cfg: Config, seed: int):
        torch.manual_seed(seed)
        envs = make_vec_env(spec, cfg.env, cfg.env.num_envs, seed)
        self.agent = make_agent(envs.obs_space, envs.act_space, cfg, "cpu")
        self.acting = Acting(envs, self.agent, np.random.default_rng(seed))
        self.step_count, self.prefill, self.step_size = 0, cfg.run.prefill, 1
        self.version = 0  # the learner's update count the weights are from

    def start(self, step: int, step_size: int, weights: tuple[int, dict[str, torch.Tensor]]) -> None:
        """Begin at job step `step` (each vector step is `step_size` job steps), new episodes."""
        self.step_count, self.step_size = step, step_size
        self.load(weights)
        self.acting.reset()

    def load(self, weights: tuple[int, dict[str, torch.Tensor]]) -> None:
        """(the learner's update count, its weights): the policy acts with them from the next step."""
        self.version, state = weights
        torch.nn.Module.load_state_dict(self.agent, state)

    def run(self, steps: int) -> list[tuple[dict, dict, int]]:
        records = []
        for _ in range(steps):
            stored = self.acting.choose(random=self.step_count < self.prefill)
            obs = self.acting.advance()
            self.step_count += self.step_size
            small = {k: v for k, v in obs.items() if k in SMALL_KEYS or k.startswith(LOG_PREFIX)}
            records.append((stored, small, getattr(self.acting.envs, "restarts", 0), self.version))
        return records

    def close(self) -> None:
        self.acting.envs.close()


class ActorEnvs:
    """What the learner knows of envs that step elsewhere: their spaces (from one env made here
    and closed), their count and the actor's env restarts."""

    def __init__(self, spec: Any, cfg: Config, seed: int):
        probe = make_env(spec, cfg.env, seed)
        self.obs_space, self.act_space = probe.obs_space, probe.act_space
        probe.close()
        self.num_envs = cfg.env.num_envs
        self.restarts = 0

    def close(self) -> None:
        pass


class Actor:
    """The learner's side of an actor: `reset` (re)starts it at the job's step count, `next`
    returns one vector step (stored step, step t + 1's small keys), `refresh` sends new weights."""

    def __init__(self, spec: Any, cfg: Config, seed: int, agent: torch.nn.Module, counters: Counters,
                 envs: ActorEnvs, step_size: int):
        self.spec, self.cfg, self.seed, self.agent = spec, cfg, seed, agent
        self.counters, self.envs, self.step_size = counters, envs, step_size
        self.refreshed_at = 0
        self.acted_with = 0  # the learner's update count that the newest delivered step's policy came from

    def weights(self) -> tuple[int, dict[str, torch.Tensor]]:
        self.refreshed_at = self.counters.updates
        return self.counters.updates, weights_of(self.agent)

    def take(self, record: tuple[dict, dict, int, int]) -> tuple[dict, dict]:
        stored, small, self.envs.restarts, self.acted_with = record
        return stored, small

    def refresh_due(self) -> None:
        """Send the learner's weights when `env.policy_every` updates have passed since the last."""
        if self.counters.updates - self.refreshed_at >= self.cfg.env.policy_every:
            self.refresh(self.weights())


class ProcessActor(Actor):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.process = None

    def reset(self) -> None:
        self.close()
        ctx = torch.multiprocessing.get_context("spawn")
        self.steps, self.inbox, self.stop = ctx.Queue(self.cfg.env.actor_queue), ctx.Queue(1), ctx.Event()
        self.process = ctx.Process(target=_process_main, daemon=True, name="reverie-actor", args=(
            self.spec, self.cfg, self.seed, self.counters.step, self.step_size, self.weights(),
            self.steps, self.inbox, self.stop))
        self.process.start()

    def next(self) -> tuple[dict, dict]:
        while True:
            try:
                record = self.steps.get(timeout=WAIT_S)
                break
            except queue.Empty:
                if not self.process.is_alive():
                    raise EnvError(f"the actor process ended (exit code {self.process.exitcode}) without a word; "
                                   "run the same command again to resume, or set env.backend=inline") from None
        if isinstance(record, str):  # the actor's traceback
            raise EnvError(f"the actor process failed: {record.strip().splitlines()[-1]} (env.backend=process; "
                           "env.backend=inline runs the envs in this process, where the error shows in full)")
        return self.take(record)

    def refresh(self, weights: tuple[int, dict[str, torch.Tensor]]) -> None:
        try:
            self.inbox.get_nowait()  # an older copy not yet taken: replaced
        except queue.Empty:
            pass
        self.inbox.put(weights)

    def close(self) -> None:
        if self.process is None:
            return
        self.stop.set()
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        for q in (self.steps, self.inbox):
            q.cancel_join_thread()
            q.close()
        self.process = None


def _process_main(spec, cfg, seed, step, step_size, weights, steps, new_weights, stop) -> None:
    """The actor process: act and step, put each vector step (blocking while the queue is full)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the learner's to handle; it stops us
    torch.set_num_threads(1)
    core = None
    try:
        core = ActorCore(spec, cfg, seed)
        core.start(step, step_size, weights)
        while not stop.is_set():
            try:
                core.load(new_weights.get_nowait())
            except queue.Empty:
                pass
            record = core.run(1)[0]
            while not stop.is_set():
                try:
                    steps.put(record, timeout=WAIT_S)
                    break
                except queue.Full:
                    continue
    except Exception:  # noqa: BLE001 - told to the learner, which raises it
        steps.put(traceback.format_exc())
    finally:
        if core is not None:
            core.close()


class RayActor(Actor):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        try:
            import ray
        except ImportError:
            raise UserError("env.backend=ray needs Ray: pip install 'reverie[ray]' (or ray), or set "
                            "env.backend=process") from None
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=self.cfg.env.ray_address or None, include_dashboard=False, log_to_driver=False)
        self.remote, self.pending, self.buffer = None, None, []

    def reset(self) -> None:
        self.close()
        self.remote = self.ray.remote(num_cpus=1)(ActorCore).remote(self.spec, self.cfg, self.seed)
        self.remote.start.remote(self.counters.step, self.step_size, self.weights())
        self.pending = self.remote.run.remote(RAY_CHUNK)
        self.buffer = []

    def next(self) -> tuple[dict, dict]:
        if not self.buffer:
            try:
                self.buffer = list(reversed(self.ray.get(self.pending)))
            except self.ray.exceptions.RayError as error:
                raise EnvError(f"the Ray actor failed: {str(error).strip().splitlines()[-1]}") from None
            self.pending = self.remote.run.remote(RAY_CHUNK)  # the next chunk runs while we train
        return self.take(self.buffer.pop())

    def refresh(self, weights: tuple[int, dict[str, torch.Tensor]]) -> None:
        self.remote.load.remote(self.ray.put(weights))  # runs after the call in flight: Ray keeps the order

    def close(self) -> None:
        if self.remote is not None:
            self.ray.kill(self.remote)
            self.remote = None


BACKENDS = {"process": ProcessActor, "ray": RayActor}
