"""Crafter (Hafner, 2021) as a Gymnasium env: ``crafter`` / ``crafter:reward`` / ``crafter:noreward``.

Observation: ``{"image": Box(0, 255, (H, W, 3), uint8)}`` with (H, W) = ``env.size``; action:
``Discrete(17)``. ``crafter:reward`` (the default) gives Crafter's reward: +1 for each achievement
first unlocked in the episode, ±0.1 per health point gained or lost. ``crafter:noreward`` gives 0.

An episode ends after 10,000 steps (a truncation) or when the player dies (a termination; Crafter
reports ``discount`` 0 then).

Achievements: at reset and at every step, ``info["log"]`` holds ``achievement_<name>`` = 1.0 if
the achievement was unlocked in the current episode, else 0.0, for all 22 achievements
(``ACHIEVEMENTS``). ``GymEnv`` turns them into ``log/achievement_<name>`` step keys; the trainer
reports their success rates and the Crafter score (``crafter_score``, from
``reverie.run.episode_logs``).

Seeding: ``reset(seed=s)`` rebuilds the world generator with seed ``s`` (same seed, same worlds);
later resets without a seed continue its sequence of worlds.
"""

from __future__ import annotations

from typing import Any

import crafter
import gymnasium as gym
import numpy as np

from reverie.config import EnvConfig
from reverie.envs.suites import crafter_score  # noqa: F401  (re-exported)
from reverie.errors import EnvError

__all__ = ["ACHIEVEMENTS", "TASKS", "CrafterEnv", "build", "check_task", "crafter_score"]

ACHIEVEMENTS: tuple[str, ...] = tuple(sorted(crafter.constants.achievements))  # the 22 names
TASKS = ("reward", "noreward")


def check_task(task: str) -> None:
    """Raise ``EnvError`` when ``task`` is not ``reward`` or ``noreward``."""
    if task not in TASKS:
        raise EnvError(f"unknown Crafter task '{task}'; use `crafter` (= `crafter:reward`) or `crafter:noreward`")


def _achievement_log(counts: dict[str, int] | None) -> dict[str, float]:
    counts = counts or {}
    return {f"achievement_{name}": 1.0 if counts.get(name, 0) > 0 else 0.0 for name in ACHIEVEMENTS}


class CrafterEnv(gym.Env):
    """One Crafter world behind the Gymnasium API (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self, task: str = "reward", cfg: EnvConfig | None = None, seed: int | None = None, length: int = 10_000
    ):
        cfg = cfg if cfg is not None else EnvConfig()
        check_task(task)
        self.task = task
        self._size = (int(cfg.size[0]), int(cfg.size[1]))  # (H, W)
        self._length = int(length)  # steps per episode (Crafter's default 10,000)
        self._seed = seed
        self._seeded = False
        self._env = self._make(seed)
        self._last_image: np.ndarray | None = None
        self.observation_space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, self._size + (3,), np.uint8)})
        self.action_space = gym.spaces.Discrete(len(crafter.constants.actions))

    def _make(self, seed: int | None) -> crafter.Env:
        # crafter's `size` is (width, height): its image has shape (size[1], size[0], 3).
        return crafter.Env(size=self._size[::-1], reward=self.task == "reward", length=self._length, seed=seed)

    @property
    def action_names(self) -> list[str]:
        return list(crafter.constants.actions)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None and not self._seeded and self._seed is not None:
            seed = self._seed  # first reset: the seed given at construction
        super().reset(seed=seed)
        if seed is not None and (self._seeded or seed != self._seed):
            self._env = self._make(int(seed))  # crafter seeds its worlds only at construction
        self._seeded = True
        image = self._env.reset()  # (H, W, 3) uint8
        self._last_image = image
        return {"image": image}, {"log": _achievement_log(None)}

    def step(self, action: Any):
        image, reward, done, info = self._env.step(int(action))
        self._last_image = image
        dead = done and info["discount"] == 0
        info = {**info, "log": _achievement_log(info["achievements"])}
        return {"image": image}, float(reward), bool(dead), bool(done and not dead), info

    def render(self) -> np.ndarray | None:
        return self._last_image

    def close(self) -> None:
        pass


def build(task: str, cfg: EnvConfig, seed: int) -> gym.Env:
    """The ``crafter:<task>`` env for the suite registry (``reverie.envs.suites``)."""
    return CrafterEnv(task, cfg, seed)
