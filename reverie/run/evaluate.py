"""Evaluation: run N complete episodes with the agent's policy and summarise the returns."""

from __future__ import annotations

import numpy as np

from ..agent import Agent


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


def run_episodes(agent: Agent, envs, episodes: int, mode: str = "eval") -> dict[str, float]:
    """Play `episodes` full episodes on a VecEnv (the first `episodes` that finish) and return
    {"return_mean", "return_std", "return_min", "return_max", "length_mean", "episodes"}."""
    if episodes < 1:
        raise ValueError("episodes must be ≥ 1")
    obs = envs.reset()
    state = agent.init_state(envs.num_envs)
    tracker = EpisodeTracker(envs.num_envs)
    done: list[tuple[float, int]] = []
    while len(done) < episodes:
        state, action = agent.act(state, obs, mode)
        obs = envs.step(action)
        tracker.add(obs)
        done += tracker.pop()
    returns = np.asarray([r for r, _ in done[:episodes]])
    return {
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
        "length_mean": float(np.mean([n for _, n in done[:episodes]])),
        "episodes": len(returns),
    }
