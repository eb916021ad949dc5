"""Evaluation: run N complete episodes with the agent's policy and summarise the returns."""

from __future__ import annotations

import numpy as np

from ..agent import Agent


def run_episodes(agent: Agent, envs, episodes: int, mode: str = "eval") -> dict[str, float]:
    """Play `episodes` full episodes on a VecEnv (the first `episodes` that finish) and return
    {"return_mean", "return_std", "return_min", "return_max", "length_mean", "episodes"}."""
    if episodes < 1:
        raise ValueError("episodes must be ≥ 1")
    n = envs.num_envs
    obs = envs.reset()
    state = agent.init_state(n)
    returns, lengths = [], []
    ep_return, ep_length = np.zeros(n), np.zeros(n, dtype=np.int64)
    # Only episodes that start after the reset are counted, one at a time per env slot.
    while len(returns) < episodes:
        state, action = agent.act(state, obs, mode)
        obs = envs.step(action)
        ep_return += obs["reward"] * ~obs["is_first"]
        ep_length += ~obs["is_first"]
        for i in np.flatnonzero(obs["is_last"]):
            if len(returns) < episodes:
                returns.append(float(ep_return[i]))
                lengths.append(int(ep_length[i]))
            ep_return[i], ep_length[i] = 0.0, 0
    returns_arr = np.asarray(returns)
    return {
        "return_mean": float(returns_arr.mean()),
        "return_std": float(returns_arr.std()),
        "return_min": float(returns_arr.min()),
        "return_max": float(returns_arr.max()),
        "length_mean": float(np.mean(lengths)),
        "episodes": len(returns),
    }
