"""Evaluation: run N complete episodes with the agent's policy and summarise the returns; record
episodes and turn them into videos (truth / open-loop model prediction / error, or rendered frames)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..agents import Agent
from ..envs.spaces import STEP_KEYS
from ..video import openloop_grid, write_video

OPENLOOP_CONTEXT = 5  # observed steps before the model predicts open loop
OPENLOOP_CHUNK = 500  # longest stretch of an episode predicted in one go (bounds memory)


class EpisodeTracker:
    """Running returns and lengths of N envs' episodes, from their step dicts."""

    def __init__(self, num_envs: int):
        self.returns = np.zeros(num_envs)
        self.lengths = np.zeros(num_envs, dtype=np.int64)
        self.finished: list[tuple[float, int]] = []

    def add(self, step: dict[str, np.ndarray]) -> None:
        live = ~step["is_first"]
        self.returns += step["reward"] * live
        self.lengths += live
        for i in np.flatnonzero(step["is_last"]):
            self.finished.append((float(self.returns[i]), int(self.lengths[i])))
            self.returns[i], self.lengths[i] = 0.0, 0

    def pop(self) -> list[tuple[float, int]]:
        """(return, length) of the episodes finished since the last call."""
        done, self.finished = self.finished, []
        return done


class EpisodeRecorder:
    """Keeps every step of the first `limit` episodes to finish, for videos.

    Fed by `run_episodes`: `observe(obs, frames)` after each reset/step of the VecEnv and
    `act(action)` after the agent chose its actions for those observations. A recorded episode is a
    dict of (T, ...) arrays, from its `is_first` step to its `is_last` step: the observation keys
    and flags of each step (`log/` keys are left out), "action" (the action chosen at that step,
    the replay's layout; zeros at the last step, which no action follows) and, when frames were
    passed, "render" (the env's `render()` image of that step). Episodes still running when
    evaluation stops are dropped.
    """

    def __init__(self, limit: int = 1, render: bool = False):
        if limit < 1:
            raise ValueError(f"record at least one episode, got limit={limit}")
        self.limit = int(limit)
        self.render = render  # run_episodes passes env.render() frames while this is True
        self.render_note = ""  # why rendering was turned off, if it was
        self.episodes: list[dict[str, np.ndarray]] = []
        self._steps: list[list[dict[str, np.ndarray]] | None] = []  # per env: the running episode
        self._pending: list[dict[str, np.ndarray] | None] = []  # per env: observed, no action yet
        self._action_dim = 0

    @property
    def full(self) -> bool:
        return len(self.episodes) >= self.limit

    def observe(self, obs: dict[str, np.ndarray], frames: list | None = None) -> None:
        if self.full:
            return
        n = len(obs["is_first"])
        if not self._steps:
            self._steps, self._pending = [None] * n, [None] * n
        for i in range(n):
            if obs["is_first"][i]:
                self._steps[i] = []
            if self._steps[i] is None:
                continue
            step = {k: np.asarray(v[i]) for k, v in obs.items() if not k.startswith("log/")}
            if frames is not None:
                step["render"] = np.asarray(frames[i])
            if obs["is_last"][i]:
                step["action"] = np.zeros(self._action_dim, np.float32)
                self._steps[i].append(step)
                self._finish(i)
            else:
                self._pending[i] = step

    def act(self, action: np.ndarray) -> None:
        if self.full:
            return
        self._action_dim = action.shape[-1]
        for i, step in enumerate(self._pending):
            if step is not None and self._steps[i] is not None:
                step["action"] = np.asarray(action[i], np.float32)
                self._steps[i].append(step)
            self._pending[i] = None

    def _finish(self, i: int) -> None:
        steps, self._steps[i] = self._steps[i], None
        if not self.full:
            self.episodes.append({k: np.stack([s[k] for s in steps]) for k in steps[0]})  # (T, ...)


def _render(envs, record: EpisodeRecorder) -> list | None:
    """Each env's `render()` frame as (H, W, 3) uint8, or None (and rendering off) when it has none."""
    if not record.render or record.full:
        return None
    try:
        frames = envs.render()
    except Exception as error:  # noqa: BLE001 (any env's render failure only turns videos off)
        frames, reason = None, f"render() raised {type(error).__name__}: {error}"
    else:
        reason = "render() returned no RGB image (the env needs render_mode='rgb_array')"
    if frames is not None and all(_is_rgb(f) for f in frames):
        return [np.asarray(f)[..., :3] for f in frames]
    record.render, record.render_note = False, f"no video: the env cannot be rendered ({reason})"
    return None


def _is_rgb(frame) -> bool:
    frame = np.asarray(frame) if frame is not None else None
    return frame is not None and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[-1] in (3, 4)


def run_episodes(agent: Agent, envs, episodes: int, mode: str = "eval",
                 record: EpisodeRecorder | None = None,
                 on_episode: Callable[[int, float, int], None] | None = None) -> dict[str, float]:
    """Play `episodes` full episodes on a VecEnv (the first `episodes` that finish) and return
    {"return_mean", "return_std", "return_min", "return_max", "length_mean", "episodes"}.

    With `record`, the steps (and, if `record.render`, the env's rendered frames) of the first
    `record.limit` episodes to finish are kept in `record.episodes`. `on_episode(count, return,
    length)` is called as each of the counted episodes finishes (count = 1, 2, …)."""
    if episodes < 1:
        raise ValueError("episodes must be ≥ 1")
    obs = envs.reset()
    if record is not None:
        record.observe(obs, _render(envs, record))
    state = agent.init_state(envs.num_envs)
    tracker = EpisodeTracker(envs.num_envs)
    done: list[tuple[float, int]] = []
    while len(done) < episodes:
        state, action, _ = agent.act(state, obs, mode)
        obs = envs.step(action)
        if record is not None:
            record.act(action)
            record.observe(obs, _render(envs, record))
        tracker.add(obs)
        for episode_return, length in tracker.pop():
            done.append((episode_return, length))
            if on_episode is not None and len(done) <= episodes:
                on_episode(len(done), episode_return, length)
    returns = np.asarray([r for r, _ in done[:episodes]])
    return {
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
        "length_mean": float(np.mean([n for _, n in done[:episodes]])),
        "episodes": len(returns),
    }


# --------------------------------------------------------------------------------------------
# Videos of recorded episodes


def episode_openloop(agent: Agent, episode: dict[str, np.ndarray], context: int = OPENLOOP_CONTEXT,
                     chunk: int = OPENLOOP_CHUNK) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The model's open-loop prediction of a recorded episode, per decoded image key:
    {key: (truth (T, H, W, C), pred (T, H, W, C)) uint8}.

    The episode is cut into pieces of at most `chunk` steps; in each, the model observes the
    first `context` steps and imagines the rest from the recorded actions (`Agent.report`).
    """
    length = len(episode["is_first"])
    pieces: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    batch_keys = [k for k in (*agent.obs_keys, "action", *STEP_KEYS) if k in episode]
    for start in range(0, length, chunk):
        batch = {k: episode[k][None, start:start + chunk] for k in batch_keys}  # (1, T', ...)
        report = agent.report(batch, context=context)
        for name, pred in report.items():  # the predicted images: openloop/{key}/pred (1, T', H, W, C) uint8
            key = name[len("openloop/"):-len("/pred")] if name.startswith("openloop/") and name.endswith("/pred") else None
            if key is None or pred.dim() != 5 or pred.dtype != torch.uint8:
                continue
            truth, preds = pieces.setdefault(key, ([], []))
            truth.append(report[f"openloop/{key}/truth"][0].cpu().numpy())
            preds.append(pred[0].cpu().numpy())
    return {k: (np.concatenate(t), np.concatenate(p)) for k, (t, p) in pieces.items()}


def episode_videos(agent: Agent, episode: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Videos of one recorded episode, {image key or "render": (T, H', W', C) uint8}:
    decoded image keys as the open-loop grid (rows truth / model / error), image observations
    the model does not decode as they are, and otherwise the env's rendered frames."""
    videos: dict[str, np.ndarray] = {}
    for key, (truth, pred) in episode_openloop(agent, episode).items():
        videos[key] = openloop_grid(truth[None], pred[None], max_samples=1)  # (T, 3H, W, C)
    for key, spec in agent.obs_space.items():
        if key not in videos and key in episode and spec.is_image:
            videos[key] = episode[key]
    if not videos and "render" in episode:
        videos["render"] = episode["render"]
    return videos


@torch.no_grad()
def write_episode_videos(agent: Agent, episodes: list[dict[str, np.ndarray]], logdir: str | Path,
                         step: int, tb: Any = None, fps: float = 20) -> list[Path]:
    """Write the videos of recorded episodes as `logdir/videos/eval_{i}_{step:09d}.{gif,mp4}`
    (`eval_{i}_{key}_…` when an episode has several image keys); returns the GIF paths."""
    paths = []
    for index, episode in enumerate(episodes):
        videos = episode_videos(agent, episode)
        for key, frames in videos.items():
            name = f"eval_{index}" if len(videos) == 1 else f"eval_{index}/{key}"
            paths.append(write_video(logdir, step, name, frames, fps, tb=tb))
    return paths
