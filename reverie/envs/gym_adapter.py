"""A Gymnasium env seen through Reverie's step-dict contract (DESIGN §3).

Every ``reset``/``step`` returns a dict of numpy arrays: the observation keys plus ``reward``
(float32, shape ()), ``is_first``, ``is_last`` and ``is_terminal`` (bool, shape ()).
``is_terminal`` follows Gymnasium's ``terminated`` only; truncation (the env's own time limit or
``max_episode_steps``) sets ``is_last`` without ``is_terminal``.

An env may report per-step statistics that are not observations (e.g. Crafter's achievements) as
``info["log"] = {name: number}``, with the same names at reset and at every step; they appear as
float32 keys ``log/<name>``. The training loop logs them per episode and never feeds them to the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from reverie.envs.spaces import ActionSpace, ArraySpec, ObsConverter, action_space_from_gym
from reverie.errors import ConfigError, EnvError


LOG_PREFIX = "log/"


def _log_keys(info: dict) -> dict[str, np.ndarray]:
    return {f"{LOG_PREFIX}{k}": np.asarray(v, dtype=np.float32) for k, v in (info.get("log") or {}).items()}


def _flags(reward: float, is_first: bool, is_last: bool, is_terminal: bool) -> dict[str, np.ndarray]:
    return {
        "reward": np.asarray(reward, dtype=np.float32),  # ()
        "is_first": np.asarray(is_first, dtype=bool),
        "is_last": np.asarray(is_last, dtype=bool),
        "is_terminal": np.asarray(is_terminal, dtype=bool),
    }


class GymEnv:
    """Wraps one ``gymnasium.Env``: converts spaces, actions and observations, repeats actions.

    Args:
        env: the Gymnasium env (this adapter owns it and closes it).
        action_repeat: env steps per agent step; rewards are summed, and repetition stops at the
            first ``terminated``/``truncated``.
        max_episode_steps: when > 0, truncate (``is_last`` but not ``is_terminal``) after this many
            agent steps, on top of any time limit of the env itself.
        seed: seeds the first reset (and the env's action space); later resets let the env's RNG
            continue, so episodes differ but the whole run is reproducible.
    """

    def __init__(self, env: gym.Env, action_repeat: int = 1, max_episode_steps: int = 0, seed: int | None = None):
        if not isinstance(env, gym.Env):
            raise EnvError(
                f"expected a gymnasium.Env, got {type(env).__name__}; "
                "envs from the old `gym` package must be ported to Gymnasium"
            )
        if int(action_repeat) < 1:
            raise ConfigError(f"env.action_repeat must be >= 1, got {action_repeat}")
        if int(max_episode_steps) < 0:
            raise ConfigError(
                f"env.max_episode_steps must be >= 0 (0 keeps the env's own limit), got {max_episode_steps}"
            )
        self.env = env
        self.action_repeat = int(action_repeat)
        self.max_episode_steps = int(max_episode_steps)
        self.seed = seed
        self._obs = ObsConverter(env.observation_space)
        self.obs_space: dict[str, ArraySpec] = self._obs.spec
        self.act_space: ActionSpace = action_space_from_gym(env.action_space)
        self._seeded = False
        self._episode_steps = 0
        self._done = True  # no episode running: step() needs a reset() first

    def reset(self) -> dict[str, np.ndarray]:
        """Start an episode; returns the first step (is_first, reward 0)."""
        if not self._seeded and self.seed is not None:
            raw_obs, info = self.env.reset(seed=int(self.seed))
            self.env.action_space.seed(int(self.seed))
        else:
            raw_obs, info = self.env.reset()
        self._seeded = True
        self._episode_steps = 0
        self._done = False
        return {**self._obs(raw_obs), **_flags(0.0, True, False, False), **_log_keys(info)}

    def step(self, action_vec: np.ndarray) -> dict[str, np.ndarray]:
        """Apply the agent's action vector (A,) ``action_repeat`` times; returns the resulting step."""
        if self._done:
            raise RuntimeError("GymEnv.step() called without a running episode: call reset() first")
        action = self.act_space.to_env(action_vec)
        total_reward = 0.0
        terminated = truncated = False
        raw_obs, info = None, {}
        for _ in range(self.action_repeat):
            raw_obs, reward, terminated, truncated, info = self.env.step(action)
            total_reward += float(reward)
            if terminated or truncated:
                break
        self._episode_steps += 1
        if self.max_episode_steps and self._episode_steps >= self.max_episode_steps:
            truncated = True
        is_last = bool(terminated or truncated)
        self._done = is_last
        return {**self._obs(raw_obs), **_flags(total_reward, False, is_last, bool(terminated)), **_log_keys(info)}

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()


@dataclass
class GymEnvFactory:
    """Picklable recipe for a ``GymEnv`` (what parallel workers receive)."""

    env_fn: Callable[[], gym.Env]
    action_repeat: int = 1
    max_episode_steps: int = 0
    seed: int | None = None

    def __call__(self) -> GymEnv:
        return GymEnv(self.env_fn(), self.action_repeat, self.max_episode_steps, self.seed)
