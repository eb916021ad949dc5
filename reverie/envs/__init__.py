"""Environments: Gymnasium adapter, spaces, env-spec registry and vectorised (parallel) envs.

``make_env`` / ``make_vec_env`` are the entry points: they accept a Gymnasium id
("CartPole-v1"), a "module:EnvId" string, a suite id registered in ``SUITES`` ("dmc:walker_walk"),
a ``gymnasium.Env`` instance or a zero-argument factory, and return envs that speak the step-dict
contract of DESIGN §3.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from reverie.config import EnvConfig
from reverie.envs.gym_adapter import GymEnv, GymEnvFactory
from reverie.envs.registry import SUITES, Suite, default_suite_preset, register_suite, resolve, suite_of
from reverie.envs import suites as _suites  # noqa: F401  (registers dmc, atari, crafter)
from reverie.envs.spaces import ActionSpace, ArraySpec, ObsConverter, action_space_from_gym, obs_spec_from_gym
from reverie.envs.vector import VecEnv, WorkerError
from reverie.errors import ConfigError, EnvError

__all__ = [
    "SUITES",
    "ActionSpace",
    "Suite",
    "default_suite_preset",
    "register_suite",
    "suite_of",
    "ArraySpec",
    "GymEnv",
    "ObsConverter",
    "VecEnv",
    "WorkerError",
    "action_space_from_gym",
    "make_env",
    "make_vec_env",
    "obs_spec_from_gym",
    "resolve",
]


def _env_factory(spec: Any, env_cfg: EnvConfig, seed: int, make_kwargs: dict[str, Any] | None) -> GymEnvFactory:
    suite = suite_of(spec)
    repeat = 1 if suite is not None and suite.repeats_actions else env_cfg.action_repeat
    return GymEnvFactory(
        resolve(spec, env_cfg, seed, make_kwargs),
        action_repeat=repeat,
        max_episode_steps=env_cfg.max_episode_steps,
        seed=seed,
    )


def make_env(
    spec: Any = None,
    env_cfg: EnvConfig | None = None,
    seed: int = 0,
    make_kwargs: dict[str, Any] | None = None,
) -> GymEnv:
    """One env; ``spec`` defaults to ``env_cfg.id``; ``seed`` seeds its first reset."""
    env_cfg = env_cfg if env_cfg is not None else EnvConfig()
    spec = env_cfg.id if spec is None else spec
    return _env_factory(spec, env_cfg, seed, make_kwargs)()


def make_vec_env(
    spec: Any = None,
    env_cfg: EnvConfig | None = None,
    num_envs: int | None = None,
    seed: int = 0,
    make_kwargs: dict[str, Any] | None = None,
) -> VecEnv:
    """``num_envs`` envs (default ``env_cfg.num_envs``); env i is seeded with ``seed + i``.

    Worker processes are used when ``num_envs > 1 and env_cfg.parallel``. An env instance can back
    only one env: for more, pass an id or a factory.
    """
    env_cfg = env_cfg if env_cfg is not None else EnvConfig()
    spec = env_cfg.id if spec is None else spec
    num_envs = env_cfg.num_envs if num_envs is None else int(num_envs)
    if num_envs < 1:
        raise ConfigError(f"the number of envs must be >= 1, got {num_envs}")
    if isinstance(spec, gym.Env) and num_envs > 1:
        raise EnvError(
            f"one env instance cannot back {num_envs} envs; pass an env id or a zero-argument factory "
            "(e.g. `lambda: MyEnv()`), or set env.num_envs=1"
        )
    factories = [_env_factory(spec, env_cfg, seed + i, make_kwargs) for i in range(num_envs)]
    return VecEnv(factories, parallel=num_envs > 1 and env_cfg.parallel, max_restarts=env_cfg.max_restarts)
