"""DeepMind Control Suite tasks as Gymnasium envs: ``dmc:<domain>_<task>`` (e.g. ``dmc:walker_walk``).

Observations (a Dict space):
    proprio (``env.proprio``): every entry of the task's observation, as float32 vectors under its
        own name (``position``, ``velocity``, ...); scalars become shape (1,);
    image (``env.image``): the scene rendered by MuJoCo as (H, W, 3) uint8 (``env.size``), from
        camera ``env.camera`` (-1: camera 2 for quadruped, 0 otherwise — as the DreamerV3 code).

The env applies ``env.action_repeat`` itself (rewards summed) and renders only the last frame of
each repeat. Episodes end after 1000 physics-control steps (the suite's time limit) as a
truncation; a step with discount 0 ends it as a termination.

Rendering uses a 1024² shadow map instead of MuJoCo's default 2048²: on a CPU (Mesa llvmpipe) a
64×64 frame then takes ~14 ms instead of ~25 ms, and the image differs only in shadow edges.

Rendering needs no display: ``MUJOCO_GL`` defaults to ``egl`` (Mesa's software EGL works on a CPU
machine; ``osmesa`` needs libosmesa6). It must be set before dm_control is first imported.
"""

from __future__ import annotations

import difflib
import os
from typing import Any

import gymnasium as gym
import numpy as np

from reverie.config import EnvConfig
from reverie.errors import EnvError

DEFAULT_CAMERAS = {"quadruped": 2}
SHADOW_SIZE = 1024
DOMAIN_ALIASES = {"cup": "ball_in_cup"}  # the only domain whose name has an underscore


def _suite():
    os.environ.setdefault("MUJOCO_GL", "egl")
    from dm_control import suite

    return suite


def split_task(task: str) -> tuple[str, str]:
    """``walker_walk`` → (``walker``, ``walk``); ``cup_catch`` / ``ball_in_cup_catch`` → ball_in_cup."""
    if task.startswith("ball_in_cup_"):
        return "ball_in_cup", task[len("ball_in_cup_"):]
    domain, _, name = task.partition("_")
    return DOMAIN_ALIASES.get(domain, domain), name


def available_tasks() -> list[str]:
    return sorted(f"{domain}_{task}" for domain, task in _suite().ALL_TASKS)


def check_task(task: str) -> None:
    """Raise ``EnvError`` naming the closest task when ``task`` is not in the suite."""
    if split_task(task) in set(_suite().ALL_TASKS):
        return
    tasks = available_tasks()
    close = difflib.get_close_matches(task, tasks, n=1, cutoff=0.5)
    hint = f"did you mean 'dmc:{close[0]}'? " if close else ""
    raise EnvError(f"unknown DeepMind Control task '{task}'; {hint}tasks: {', '.join(tasks)}")


def _box(spec: Any) -> gym.spaces.Box:
    shape = tuple(int(n) for n in spec.shape) or (1,)
    return gym.spaces.Box(-np.inf, np.inf, shape, np.float32)


class DMCEnv(gym.Env):
    """One dm_control task behind the Gymnasium API (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, task: str, cfg: EnvConfig | None = None, seed: int | None = None):
        cfg = cfg if cfg is not None else EnvConfig()
        check_task(task)
        domain, name = split_task(task)
        self._env = _suite().load(domain, name, task_kwargs={"random": seed})
        self._env.physics.model.vis.quality.shadowsize = SHADOW_SIZE  # before the first render
        self.repeat = int(cfg.action_repeat)
        self.size = tuple(int(n) for n in cfg.size)
        self.camera = DEFAULT_CAMERAS.get(domain, 0) if cfg.camera < 0 else int(cfg.camera)
        self.proprio, self.image = bool(cfg.proprio), bool(cfg.image)
        self.render_mode = "rgb_array"
        spaces: dict[str, gym.Space] = {}
        if self.proprio:
            spaces.update({key: _box(spec) for key, spec in self._env.observation_spec().items()})
        if self.image:
            spaces["image"] = gym.spaces.Box(0, 255, (*self.size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        spec = self._env.action_spec()
        self.action_space = gym.spaces.Box(spec.minimum.astype(np.float32), spec.maximum.astype(np.float32),
                                           dtype=np.float32)

    def _observation(self, time_step: Any) -> dict[str, np.ndarray]:
        obs: dict[str, np.ndarray] = {}
        if self.proprio:
            for key, value in time_step.observation.items():
                obs[key] = np.asarray(value, dtype=np.float32).reshape(self.observation_space[key].shape)
        if self.image:
            obs["image"] = self.render()
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            # dm_control tasks draw initial states from their own RandomState.
            self._env.task.random.seed(seed)
        return self._observation(self._env.reset()), {}

    def step(self, action: np.ndarray):
        action = np.asarray(action, dtype=np.float64)
        if not np.isfinite(action).all():
            raise ValueError(f"non-finite action {action} sent to a DeepMind Control env")
        reward, time_step = 0.0, None
        for _ in range(self.repeat):
            time_step = self._env.step(action)
            reward += float(time_step.reward or 0.0)
            if time_step.last():
                break
        terminated = bool(time_step.last() and time_step.discount == 0.0)
        truncated = bool(time_step.last() and not terminated)
        return self._observation(time_step), reward, terminated, truncated, {}

    def render(self) -> np.ndarray:
        """The current frame, (H, W, 3) uint8."""
        return self._env.physics.render(*self.size, camera_id=self.camera)

    def close(self) -> None:
        self._env.close()


def build(task: str, cfg: EnvConfig, seed: int) -> gym.Env:
    return DMCEnv(task, cfg, seed)
