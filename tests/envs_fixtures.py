"""Tiny Gymnasium envs for tests/test_envs.py, in an importable module so spawned workers and
`module:EnvId` specs can load them. Importing it registers the id `ReverieTestCounter-v0`."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

COUNTER_ID = "ReverieTestCounter-v0"


class CounterEnv(gym.Env):
    """Observation = steps taken this episode (1,); reward at step t is t.

    Terminates at step ``terminate_at`` and truncates at step ``truncate_at`` (None: never).
    """

    def __init__(self, terminate_at: int | None = None, truncate_at: int | None = None):
        self.observation_space = gym.spaces.Box(0.0, 1000.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.terminate_at = terminate_at
        self.truncate_at = truncate_at
        self.t = 0
        self.actions: list[int] = []

    def _obs(self) -> np.ndarray:
        return np.array([self.t], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.actions.append(int(action))
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        truncated = self.truncate_at is not None and self.t >= self.truncate_at
        return self._obs(), float(self.t), terminated, truncated, {}


class RaisingEnv(CounterEnv):
    """Raises ValueError on its second step."""

    def step(self, action):
        if self.t == 1:
            raise ValueError("boom at step 2")
        return super().step(action)


def make_raising_env() -> gym.Env:
    return RaisingEnv()


def make_counter_env() -> gym.Env:
    return CounterEnv(terminate_at=3)


if COUNTER_ID not in gym.registry:
    gym.register(id=COUNTER_ID, entry_point="envs_fixtures:CounterEnv", kwargs={"terminate_at": 4})


class TupleObsEnv(CounterEnv):
    """An observation space Reverie does not support: a Tuple whose entry 1 is a Text space."""

    def __init__(self):
        super().__init__()
        self.observation_space = gym.spaces.Tuple([gym.spaces.Discrete(2), gym.spaces.Text(5)])


class DyingEnv(CounterEnv):
    """Kills its own process on the first step, like a crashing simulator."""

    def step(self, action):
        import os

        os._exit(3)


def make_tuple_obs_env() -> gym.Env:
    return TupleObsEnv()


def make_dying_env() -> gym.Env:
    return DyingEnv()
