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

The agent's carried state (`agent.init_state(N)`) lives here between steps. Replay chunks that are
due go to disk right after each add (`persist`), before the envs move on.
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


class Driver:
    def __init__(self, envs: Any, agent: Agent, replay: Replay, rng: np.random.Generator,
                 episode_logs: EpisodeLogStats, persist: Callable[[], None] = lambda: None):
        self.envs, self.agent, self.replay = envs, agent, replay
        self.num_envs = envs.num_envs
        self.rng = rng  # the prefill's random actions
        self.episode_logs = episode_logs
        self.persist = persist  # writes the replay chunks that are due
        self.tracker = EpisodeTracker(self.num_envs)
        self.obs: dict[str, np.ndarray] = {}
        self.state: Any = None

    def reset(self) -> None:
        """Start every env's episode (also on resume: the envs restart with the run)."""
        self.obs = self.envs.reset()
        self.state = self.agent.init_state(self.num_envs)

    def step(self, random: bool = False) -> list[tuple[float, int]]:
        """One vector step (N policy steps); returns (return, length) of the episodes it finished."""
        if random:
            action = self.envs.act_space.sample_random(self.rng, self.num_envs).astype(np.float32)  # (N, A)
            extras = self.blank_extras()
        else:
            self.state, action, extras = self.agent.act(self.state, self.obs, "train")
        data, _ = split_log_keys(self.obs)
        self.replay.add({**data, "action": action, **extras})  # step t with the action taken in it
        self.persist()
        self.obs = self.envs.step(action)
        self.tracker.add(self.obs)
        self.episode_logs.add(split_log_keys(self.obs)[1], self.obs["is_last"])
        return self.tracker.pop()

    def blank_extras(self) -> dict[str, np.ndarray]:
        """Zeros of the agent's replay extras for a random step: {key: (N, *spec.shape)}."""
        return {k: np.zeros((self.num_envs, *spec.shape), spec.dtype) for k, spec in self.agent.replay_fields.items()}


def replay_summary(envs: Any, replay_fields: dict[str, Any], capacity: int, storage: str = "memory",
                   folder: Any = None) -> str:
    """One console line: what a stored step takes and where its bytes go (RAM, disk) when full."""
    spec = {k: (tuple(s.shape), np.dtype(s.dtype)) for k, s in envs.obs_space.items()}
    spec.update({"action": ((envs.act_space.dim,), np.dtype(np.float32)),
                 "reward": ((), np.dtype(np.float32)), "is_first": ((), np.dtype(bool)),
                 "is_last": ((), np.dtype(bool)), "is_terminal": ((), np.dtype(bool))})
    spec.update({k: (tuple(s.shape), np.dtype(s.dtype)) for k, s in replay_fields.items()})
    return describe_steps(spec, capacity, storage, folder)
