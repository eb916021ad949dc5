"""Speed of the tree-search family: simulations per second of the batched search, and updates per
second of the MuZero agent, on this machine.

    search   `muzero.search` muzero and gumbel with the `--preset muzero` network (vector obs of
             CartPole's size, 2 actions; and an Atari-sized 64 × 64 × 3 image, 18 actions) from N
             roots at once (N = --envs): one call of `agent.act`, so the representation, every
             expansion and the Python bookkeeping of the search are in the time; simulations/s = N ×
             simulations / seconds per call
    update   one `agent.train_step` on a fixed random batch of the preset's shape (256 × 11)

Each measurement takes the median of --repeats timed calls after --warmup untimed ones, in this
process, with --threads torch threads. Writes search_throughput.json and .md to --out.

    python benchmarks/search_throughput.py --envs 1 8 64 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's reverie

import gymnasium as gym
import numpy as np
import torch
from replay_storage import cpu_name  # benchmarks/replay_storage.py

from reverie import config as C
from reverie.agents import make_agent
from reverie.agents.muzero.agent import POLICY_KEY
from reverie.envs.spaces import ArraySpec, action_space_from_gym

OBS = {"vector": ({"vector": ArraySpec((4,), np.float32)}, 2),
       "image": ({"image": ArraySpec((64, 64, 3), np.uint8)}, 18)}


def build(obs: str, search: str, threads: int):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = C.make_config(C.compose_presets(["muzero"]), [f"muzero.search={search}"])
    obs_space, actions = OBS[obs]
    return cfg, make_agent(obs_space, action_space_from_gym(gym.spaces.Discrete(actions)), cfg), obs_space, actions


def random_obs(obs_space: dict, lead: tuple[int, ...], rng) -> dict[str, np.ndarray]:
    return {k: (rng.integers(0, 256, (*lead, *s.shape), dtype=np.uint8) if s.dtype == np.uint8
                else rng.normal(size=(*lead, *s.shape)).astype(np.float32)) for k, s in obs_space.items()}


def timed(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def measure_search(obs: str, search: str, envs: int, args) -> dict:
    cfg, agent, obs_space, _ = build(obs, search, args.threads)
    rng = np.random.default_rng(0)
    batch = {**random_obs(obs_space, (envs,), rng), "is_first": np.zeros(envs, bool)}
    state = agent.init_state(envs)
    seconds = timed(lambda: agent.act(state, batch, "train"), args.warmup, args.repeats)
    sims = cfg.muzero.simulations
    return {"what": "search", "obs": obs, "search": search, "envs": envs, "simulations": sims,
            "seconds_per_call": seconds, "simulations_per_s": envs * sims / seconds, "env_steps_per_s": envs / seconds}


def measure_update(obs: str, args) -> dict:
    cfg, agent, obs_space, actions = build(obs, "muzero", args.threads)
    rng = np.random.default_rng(0)
    B, T = cfg.batch_size, cfg.batch_length
    batch = {**random_obs(obs_space, (B, T), rng), "reward": rng.normal(size=(B, T)).astype(np.float32),
             "is_first": np.zeros((B, T), bool), "is_last": np.zeros((B, T), bool),
             "is_terminal": np.zeros((B, T), bool),
             "action": np.eye(actions, dtype=np.float32)[rng.integers(0, actions, (B, T))],
             POLICY_KEY: rng.dirichlet(np.ones(actions), (B, T)).astype(np.float32)}
    seconds = timed(lambda: agent.train_step(batch)["loss/total"].item(), args.warmup, args.repeats)
    return {"what": "update", "obs": obs, "batch": [B, T], "seconds_per_update": seconds, "updates_per_s": 1 / seconds,
            "params": sum(p.numel() for p in agent.params)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--obs", nargs="+", default=["vector", "image"], choices=list(OBS))
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    rows = []
    for obs in args.obs:
        for search in ("muzero", "gumbel"):
            for envs in args.envs:
                rows.append(measure_search(obs, search, envs, args))
                print(rows[-1], flush=True)
        rows.append(measure_update(obs, args))
        print(rows[-1], flush=True)
    machine = f"{cpu_name()}, {args.threads} thread(s), torch {torch.__version__}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "search_throughput.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    lines = ["# Tree search and MuZero update speed", "", f"{machine}; medians of {args.repeats} calls.", "",
             "| obs | search | envs (trees) | simulations | s per act call | simulations/s | env steps/s |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['obs']} | {r['search']} | {r['envs']} | {r['simulations']} | {r['seconds_per_call']:.4f} "
              f"| {r['simulations_per_s']:,.0f} | {r['env_steps_per_s']:,.1f} |" for r in rows if r["what"] == "search"]
    lines += ["", "| obs | batch | params | s per update | updates/s |", "|---|---|---|---|---|"]
    lines += [f"| {r['obs']} | {r['batch'][0]} × {r['batch'][1]} | {r['params']:,} | {r['seconds_per_update']:.3f} "
              f"| {r['updates_per_s']:.2f} |" for r in rows if r["what"] == "update"]
    lines += ["", "## Reproduce", "", "```", "python benchmarks/search_throughput.py " + " ".join(sys.argv[1:]), "```"]
    (args.out / "search_throughput.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
