"""Atari 2600 games through ale-py as Gymnasium envs: ``atari:<game>`` (e.g. ``atari:ms_pacman``).

Games are named in lower snake case as in the DreamerV3 paper (``pong``, ``ms_pacman``,
``private_eye``): the ``game`` of the Gymnasium id ``ALE/<Game>-v5`` (``ALE/MsPacman-v5``). ale-py
ships the ROMs.

The env applies the ``EnvConfig`` options itself:

- ``action_repeat``: ALE frames per agent step, rewards summed (raw, not clipped); the image is the
  pixel-wise max over the last two frames of the step (Atari sprites flicker between frames). When
  the game ends before the last frame, the image is the final frame alone.
- ``size`` (H, W): the frame (210×160) resized with ``cv2.INTER_AREA``.
- ``gray``: ALE's greyscale screen as (H, W, 1); otherwise RGB (H, W, 3).
- ``sticky``: ALE repeats the previous action with probability 0.25 (Machado et al., 2018).
- ``noops``: 0 to ``noops`` (uniform) no-op frames at each reset, drawn from the env's seeded RNG.
- ``full_actions``: all 18 joystick actions instead of the game's minimal set.

Losing a life does not end the episode. An episode is truncated after 108,000 frames (30 minutes
of play; ALE's ``max_num_frames_per_episode`` as in ``ALE/*-v5``).

Why not ``gymnasium.wrappers.AtariPreprocessing`` (1.4): it draws 1 to ``noop_max`` no-ops (never
0) and, when the game ends before the last frame of a skip, returns the previous step's image; it
also steps the inner env frame by frame, copying every screen. This wrapper calls the ALE directly
and reads the screen only for the frames it pools (~20% more steps/s on one CPU core).
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from typing import Any

import ale_py
import cv2
import gymnasium as gym
import numpy as np

from reverie.config import EnvConfig
from reverie.errors import ConfigError, EnvError

MAX_FRAMES_PER_EPISODE = 108_000
STICKY_PROBABILITY = 0.25


@lru_cache(maxsize=1)
def available_games() -> dict[str, str]:
    """Game name (``ms_pacman``) -> Gymnasium id (``ALE/MsPacman-v5``), for every ``ALE/*-v5`` id."""
    gym.register_envs(ale_py)
    games = {}
    for env_id, spec in gym.registry.items():
        if spec.namespace == "ALE" and spec.version == 5 and "game" in spec.kwargs:
            games[str(spec.kwargs["game"])] = env_id
    return dict(sorted(games.items()))


def check_task(task: str) -> None:
    """Raise ``EnvError`` naming the closest game when ``task`` is not an Atari game."""
    games = available_games()
    if task in games:
        return
    close = difflib.get_close_matches(task, list(games), n=1, cutoff=0.6)
    hint = f"did you mean 'atari:{close[0]}'? " if close else ""
    raise EnvError(f"unknown Atari game '{task}'; {hint}games: {', '.join(games)}")


class AtariEnv(gym.Env):
    """One Atari game with frame skip, frame max-pooling, resizing and no-op starts (module docstring).

    Observation: ``{"image": Box(0, 255, (H, W, C), uint8)}`` with C = 1 (``gray``) or 3.
    Action: ``Discrete(n)``, n the size of the minimal (or, with ``full_actions``, full) action set.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, game: str, cfg: EnvConfig | None = None, seed: int | None = None):
        cfg = cfg if cfg is not None else EnvConfig()
        check_task(game)
        if int(cfg.action_repeat) < 1:
            raise ConfigError(f"env.action_repeat must be >= 1, got {cfg.action_repeat}")
        if int(cfg.noops) < 0:
            raise ConfigError(f"env.noops must be >= 0, got {cfg.noops}")
        self.game = game
        self._inner = gym.make(
            available_games()[game],
            frameskip=1,
            repeat_action_probability=STICKY_PROBABILITY if cfg.sticky else 0.0,
            full_action_space=bool(cfg.full_actions),
            max_num_frames_per_episode=MAX_FRAMES_PER_EPISODE,
            obs_type="grayscale" if cfg.gray else "rgb",
            disable_env_checker=True,
        ).unwrapped
        self.ale = self._inner.ale
        legal = self.ale.getLegalActionSet() if cfg.full_actions else self.ale.getMinimalActionSet()
        self._actions = list(legal)  # action index -> ALE action (the order of ale-py's envs)
        self._repeat = int(cfg.action_repeat)
        self._noops = int(cfg.noops)
        self._gray = bool(cfg.gray)
        self._size = (int(cfg.size[0]), int(cfg.size[1]))  # (H, W)
        self._seed = seed
        self._seeded = False
        screen = tuple(self.ale.getScreenDims())  # (210, 160)
        shape = screen if self._gray else screen + (3,)
        self._last = np.zeros(shape, np.uint8)  # last frame of a step
        self._prev = np.zeros(shape, np.uint8)  # the frame before it
        channels = 1 if self._gray else 3
        self.observation_space = gym.spaces.Dict(
            {"image": gym.spaces.Box(0, 255, self._size + (channels,), np.uint8)}
        )
        self.action_space = gym.spaces.Discrete(len(self._actions))

    def get_action_meanings(self) -> list[str]:
        return self._inner.get_action_meanings()

    def _grab(self, out: np.ndarray) -> None:
        if self._gray:
            self.ale.getScreenGrayscale(out)
        else:
            self.ale.getScreenRGB(out)

    def _image(self, pooled: bool) -> dict[str, np.ndarray]:
        frame = np.maximum(self._last, self._prev) if pooled else self._last  # (210, 160[, 3])
        if frame.shape[:2] != self._size:
            frame = cv2.resize(frame, self._size[::-1], interpolation=cv2.INTER_AREA)  # (H, W[, 3])
        if self._gray:
            frame = frame[..., None]  # (H, W, 1)
        return {"image": np.ascontiguousarray(frame, dtype=np.uint8)}

    def _info(self) -> dict[str, Any]:
        return {"lives": self.ale.lives(), "episode_frame_number": self.ale.getEpisodeFrameNumber()}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None and not self._seeded:
            seed = self._seed  # first reset without a seed: the seed given at construction
        self._seeded = True
        super().reset(seed=seed)  # seeds self.np_random (the no-op count) when seed is given
        self._inner.reset(seed=seed)  # seeds the ALE (sticky actions) when seed is given
        for _ in range(int(self.np_random.integers(0, self._noops + 1))):
            self.ale.act(ale_py.Action.NOOP)
            if self.ale.game_over():
                self.ale.reset_game()
        self._grab(self._last)
        return self._image(pooled=False), self._info()

    def step(self, action: Any):
        ale_action = self._actions[int(action)]
        reward = 0.0
        pooled = False
        for t in range(self._repeat):
            if t == self._repeat - 1 and t > 0:
                self._grab(self._prev)  # the screen after the second-to-last frame
                pooled = True
            reward += self.ale.act(ale_action)
            if self.ale.game_over():
                break  # pooled stays True only when this was the last frame
        self._grab(self._last)
        terminated = self.ale.game_over(with_truncation=False)
        truncated = self.ale.game_truncated()
        return self._image(pooled), float(reward), terminated, truncated, self._info()

    def render(self) -> np.ndarray:
        return self.ale.getScreenRGB()  # (210, 160, 3)

    def close(self) -> None:
        self._inner.close()


def build(task: str, cfg: EnvConfig, seed: int) -> gym.Env:
    """The ``atari:<task>`` env for the suite registry (``reverie.envs.suites``)."""
    return AtariEnv(task, cfg, seed)
