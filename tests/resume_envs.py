"""Envs for the reliability tests (resume, faults), importable by name from a training subprocess
or an env worker (`--env resume_envs:ReverieStamped-v0`, with tests/ on PYTHONPATH).

`StampedEnv` stamps every observation with a random episode id and the step in the episode, so the
replay on disk can be checked for steps stored twice or lost: (id, t) pairs must be unique and,
per id, consecutive from 0. The ids come from `os.urandom`, not the seeded RNG, so an env rebuilt
after a resume (seeded as before) cannot repeat them.
"""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np

STAMPED_ID = "ReverieStamped-v0"
STAMPED_IMAGE_ID = "ReverieStampedImage-v0"
NAN_REWARD_VARIABLE = "REVERIE_TEST_NAN_REWARD"  # when set to 1, every reward is NaN


class StampedEnv(gym.Env):
    """Observation (3,): [id high 24 bits, id low 24 bits, t]; episodes truncate after 40 steps;
    reward 1 for action 1, else 0."""

    def __init__(self, length: int = 40):
        self.observation_space = gym.spaces.Box(0.0, 2.0**24, (3,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.length = length
        self.uid, self.t = 0, 0

    def _obs(self) -> np.ndarray:
        return np.array([self.uid >> 24, self.uid & 0xFFFFFF, self.t], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.uid, self.t = int.from_bytes(os.urandom(6), "little"), 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        reward = float("nan") if os.environ.get(NAN_REWARD_VARIABLE) == "1" else float(action == 1)
        return self._obs(), reward, False, self.t >= self.length, {}


class StampedImageEnv(StampedEnv):
    """A StampedEnv whose observation is a dict: the stamp as "vector" and a 16×16×3 uint8 "image"
    that encodes it (`stamp_image`), so a stored image can be checked against its step."""

    def __init__(self, length: int = 40):
        super().__init__(length)
        self.observation_space = gym.spaces.Dict({
            "vector": gym.spaces.Box(0.0, 2.0**24, (3,), np.float32),
            "image": gym.spaces.Box(0, 255, (16, 16, 3), np.uint8),
        })

    def _obs(self):
        vector = super()._obs()
        return {"vector": vector, "image": stamp_image(vector)}


def stamp_image(vector: np.ndarray) -> np.ndarray:
    """(..., 3) stamps → (..., 16, 16, 3) uint8 images: channel c holds byte c of id low · t."""
    code = (vector[..., 1].astype(np.int64) * 1000 + vector[..., 2].astype(np.int64))  # (...)
    channels = np.stack([(code >> (8 * c)) & 0xFF for c in range(3)], -1).astype(np.uint8)  # (..., 3)
    return np.broadcast_to(channels[..., None, None, :], (*channels.shape[:-1], 16, 16, 3)).copy()


for _id, _entry in ((STAMPED_ID, "StampedEnv"), (STAMPED_IMAGE_ID, "StampedImageEnv")):
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=f"resume_envs:{_entry}")


class FlakyEnv(StampedEnv):
    """A StampedEnv that fails on purpose: at its `fail_at`-th step (or its first reset, with
    `on="reset"`) it raises RuntimeError (`how="raise"`), kills its process (`how="exit"`, for env
    workers) or raises a user error (`how="user"`). With `marker` (a file path) it fails once per
    marker: the first failure creates the file; without it, every instance fails."""

    def __init__(self, fail_at: int = 3, how: str = "raise", on: str = "step", marker: str = ""):
        super().__init__()
        self.fail_at, self.how, self.on, self.marker, self.steps = fail_at, how, on, marker, 0

    def _maybe_fail(self) -> None:
        if self.marker:
            if os.path.exists(self.marker):
                return
            open(self.marker, "w").close()
        if self.how == "exit":
            os._exit(7)
        if self.how == "user":
            from reverie.errors import EnvError

            raise EnvError("this env is misconfigured on purpose")
        raise RuntimeError(f"simulated crash at step {self.steps}")

    def reset(self, *, seed=None, options=None):
        if self.on == "reset":
            self._maybe_fail()
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self.steps += 1
        if self.on == "step" and self.steps == self.fail_at:
            self._maybe_fail()
        return super().step(action)


def flaky_factory(**kwargs):
    """A picklable zero-argument factory for env workers."""
    import functools

    return functools.partial(FlakyEnv, **kwargs)
