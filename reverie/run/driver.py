"""The driver: N envs ↔ agent ↔ replay, one vector step at a time.

Each `step` takes the current observations of the N envs, picks their actions (the agent's
policy, or uniform random ones during the prefill), stores the step in replay beside the action
taken in it and the agent's replay extras, steps the envs, and tracks the episodes:

    obs     {key: (N, ...)}       from `envs.reset()` / `envs.step(action)`; `log/` keys are not
                                  stored (they feed `EpisodeLogStats`)
    action  (N, A) float32        `agent.act(state, obs, "train")`, or `act_space.sample_random`
                                  drawn from the trainer's numpy generator (checkpointed, so a
                                  resumed prefill draws what an uninterrupted one would)
    extras  {key: (N, *spec.shape)} per `agent.replay_fields`; zeros of those specs when random

The agent's carried state (`agent.init_state(N)`) lives in `Acting` between steps. Replay chunks
that are due go to disk right after each add (`persist`), before the envs move on. With
`env.backend` process or ray, `Acting` runs in an actor (actors.py) while the learner trains, and
the driver stores the steps it delivers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..agents import Agent
from ..replay import Replay
from ..replay.sizes import describe_steps
from .episode_logs import EpisodeLogStats, split_log_keys
from .evaluate import EpisodeTracker


class Acting:
    """The envs and the policy that acts in them: the half of a vector step that an actor process
    (actors.py) can run apart from the learner. `choose` picks the actions for the current
    observations and returns the step to store; `advance` steps the envs with them."""

    def __init__(self, envs: Any, agent: Agent, rng: np.random.Generator):
        self.envs, self.agent, self.rng = envs, agent, rng
        self.num_envs = envs.num_envs
        self.obs: dict[str, np.ndarray] = {}
        self.state: Any = None
        self.action: np.ndarray | None = None

    def reset(self) -> None:
        """Start every env's episode (also on resume: the envs restart with the run)."""
        self.obs = self.envs.reset()
        self.state = self.agent.init_state(self.num_envs)

    def choose(self, random: bool = False) -> dict[str, np.ndarray]:
        """Step t to store: its observation keys (no `log/` keys), the action taken in it, the extras."""
        if random:
            action = self.envs.act_space.sample_random(self.rng, self.num_envs).astype(np.float32)  # (N, A)
            extras = blank_extras(self.agent, self.num_envs)
        else:
            self.state, action, extras = self.agent.act(self.state, self.obs, "train")
        self.action = action
        data, _ = split_log_keys(self.obs)
        return {**data, "action": action, **extras}

    def advance(self) -> dict[str, np.ndarray]:
        """Step the envs with the chosen actions; the new observations (step t + 1)."""
        self.obs = self.envs.step(self.action)
        return self.obs


def blank_extras(agent: Agent, num_envs: int) -> dict[str, np.ndarray]:
    """Zeros of the agent's replay extras for a random step: {key: (N, *spec.shape)}."""
    return {k: np.zeros((num_envs, *spec.shape), spec.dtype) for k, spec in agent.replay_fields.items()}


class Driver:
    """The learner's half: stores each step in replay, persists due chunks, tracks the episodes.
    With `source` None it acts and steps the envs itself (`Acting`) between updates; else `source`
    (an actor from actors.py) delivers the steps that envs stepped elsewhere took."""

    def __init__(self, envs: Any, agent: Agent, replay: Replay, rng: np.random.Generator,
                 episode_logs: EpisodeLogStats, persist: Callable[[], None] = lambda: None, source: Any = None):
        self.replay = replay
        self.num_envs = envs.num_envs
        self.acting = Acting(envs, agent, rng) if source is None else None
        self.source = source
        self.episode_logs = episode_logs
        self.persist = persist  # writes the replay chunks that are due
        self.tracker = EpisodeTracker(self.num_envs)

    def reset(self) -> None:
        """Start every env's episode (also on resume: the envs restart with the run)."""
        (self.acting or self.source).reset()

    def store(self, step: dict[str, np.ndarray]) -> None:
        """Add one vector step to replay and write the chunks that are due."""
        self.replay.add(step)
        self.persist()

    def step(self, random: bool = False) -> list[tuple[float, int]]:
        """One vector step (N policy steps); returns (return, length) of the episodes it finished."""
        if self.acting is not None:
            self.store(self.acting.choose(random))  # step t with the action taken in it
            obs = self.acting.advance()  # after the store: the chunks due are on disk first
        else:
            stored, obs = self.source.next()  # the actor decided `random` itself, by its step count
            self.store(stored)
        self.tracker.add(obs)
        self.episode_logs.add(split_log_keys(obs)[1], obs["is_last"])
        return self.tracker.pop()


def replay_summary(envs: Any, replay_fields: dict[str, Any], capacity: int, storage: str = "memory",
                   folder: Any = None) -> str:
    """One console line: what a stored step takes and where its bytes go (RAM, disk) when full."""
    spec = {k: (tuple(s.shape), np.dtype(s.dtype)) for k, s in envs.obs_space.items()}
    spec.update({"action": ((envs.act_space.dim,), np.dtype(np.float32)),
                 "reward": ((), np.dtype(np.float32)), "is_first": ((), np.dtype(bool)),
                 "is_last": ((), np.dtype(bool)), "is_terminal": ((), np.dtype(bool))})
    spec.update({k: (tuple(s.shape), np.dtype(s.dtype)) for k, s in replay_fields.items()})
    return describe_steps(spec, capacity, storage, folder)
