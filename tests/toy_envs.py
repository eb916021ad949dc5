"""Tiny environments that only a working agent solves; importable by spawned env workers."""

import gymnasium as gym
import numpy as np


class CueEnv(gym.Env):
    """Each step shows a random cue (one-hot of 2); acting to match it earns reward 1 on the next
    step. Episodes last `length` steps (truncated). Random play scores length/2, optimal length.

    Solving it needs the whole agent: the reward model must learn that the reward depends on the
    previous cue and action (through the recurrent state), imagination must carry that, and the
    actor must follow the imagined advantage.
    """

    def __init__(self, length: int = 8):
        self.length = length
        self.observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._cue, self._t = 0, 0

    def _obs(self):
        return np.eye(2, dtype=np.float32)[self._cue]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        self._cue = int(self.np_random.integers(2))
        return self._obs(), {}

    def step(self, action):
        reward = float(int(action) == self._cue)
        self._t += 1
        self._cue = int(self.np_random.integers(2))
        return self._obs(), reward, False, self._t >= self.length, {}


class DictObsEnv(gym.Env):
    """Dict observations (a 16×16 RGB image and a 3-vector) with a 2-D continuous action."""

    def __init__(self, length: int = 20):
        self.length = length
        self.observation_space = gym.spaces.Dict({
            "image": gym.spaces.Box(0, 255, (16, 16, 3), np.uint8),
            "state": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
        })
        self.action_space = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
        self._t = 0

    def _obs(self):
        image = np.full((16, 16, 3), (self._t * 10) % 256, np.uint8)
        return {"image": image, "state": np.array([self._t, 1.0, -1.0], np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        self._t += 1
        reward = -float(np.square(action).sum())
        return self._obs(), reward, self._t >= self.length, False, {}


class DiscreteObsEnv(CueEnv):
    """CueEnv with integer observations: the cue is a ``Discrete(2)`` and a ``MultiDiscrete([3, 4])``
    cell counter and a 1-D Box of the step count ride along in a Dict; with ``bare=True`` the
    observation is the ``Discrete(2)`` cue alone. Acting to match the cue earns reward 1 on
    the next step; episodes last `length` steps (truncated)."""

    def __init__(self, length: int = 8, bare: bool = False):
        super().__init__(length)
        self.bare = bare
        if not bare:
            self.observation_space = gym.spaces.Dict({
                "cue": gym.spaces.Discrete(2),
                "cell": gym.spaces.MultiDiscrete([3, 4]),
                "time": gym.spaces.Box(0.0, np.inf, (1,), np.float32),
            })
        else:
            self.observation_space = gym.spaces.Discrete(2)

    def _obs(self):
        if self.bare:
            return self._cue
        cell = np.array([self._t % 3, self._t % 4], np.int64)
        return {"cue": self._cue, "cell": cell, "time": np.array([self._t], np.float32)}
