"""Agents side by side on one task at equal env steps: Reverie presets and Stable-Baselines3 baselines.

Every agent trains for --steps policy steps of the same env (Reverie's env stack: its suite presets,
action repeat and time limits; SB3 sees it through `GymView`, a Gymnasium env over Reverie's step
dicts) and is evaluated with one protocol: --eval-episodes deterministic episodes (the policy's mode,
SB3's `deterministic=True`) on an env of its own (seed + 10,000) every --eval-every steps from step
0, and once at the end. Agents:

    dreamerv3, tdmpc2+tdmpc2_1m, ...   a Reverie run with these presets (`+` joins them), as a
                                        `reverie train` subprocess; its eval rows from metrics.jsonl
    sb3:SAC, sb3:PPO, sb3:DQN, ...     an SB3 model with RL Baselines3 Zoo's tuned hyper-parameters
                                        where `ZOO` holds them for the task, else the library's
                                        defaults (the table says which)

`--set AGENT KEY=VALUE` passes a config override to one Reverie agent. A finished run in --runs-dir
is reused. Writes compare_<task>.json, .md (final values and the curve at five checkpoints) and .png.

    python benchmarks/compare.py --task dmc:cartpole_swingup --steps 50000 --agent dreamerv3 \\
        --agent tdmpc2 --agent sb3:SAC --eval-every 5000 --eval-episodes 5 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's reverie

from reverie import config as config_lib  # noqa: E402
from reverie.envs import default_suite_preset, make_env  # noqa: E402
from reverie.logging import read_metrics  # noqa: E402

SB3_ALGOS = ("SAC", "PPO", "DQN", "A2C", "TD3")
# RL Baselines3 Zoo (DLR-RM/rl-baselines3-zoo 22e3ff2, hyperparams/<algo>.yml) for single-env runs; the
# Zoo's entries that need several envs, observation normalisation, schedules or action-noise objects
# (its PPO and TD3 ones here) are left out, and those runs take the library defaults.
ZOO = {
    ("SAC", "Pendulum-v1"): {"learning_rate": 1e-3},
    ("SAC", "MountainCarContinuous-v0"): {
        "learning_rate": 3e-4, "buffer_size": 50_000, "batch_size": 512, "ent_coef": 0.1, "train_freq": 32,
        "gradient_steps": 32, "gamma": 0.9999, "tau": 0.01, "learning_starts": 0, "use_sde": True,
        "policy_kwargs": {"log_std_init": -3.67, "net_arch": [64, 64]}},
    ("DQN", "CartPole-v1"): {
        "learning_rate": 2.3e-3, "batch_size": 64, "buffer_size": 100_000, "learning_starts": 1000, "gamma": 0.99,
        "target_update_interval": 10, "train_freq": 256, "gradient_steps": 128, "exploration_fraction": 0.16,
        "exploration_final_eps": 0.04, "policy_kwargs": {"net_arch": [256, 256]}},
}


class GymView(gym.Env):
    """A Reverie env (`make_env`) as a Gymnasium env: the observation keys flattened and concatenated
    in key order into one float32 Box, actions as the env's Box in [−1, 1]^A or a Discrete (one
    sub-action), `terminated` = is_terminal and `truncated` = is_last without it."""

    def __init__(self, task: str, env_cfg: Any, seed: int):
        self.env = make_env(task, env_cfg, seed)
        self.keys = sorted(self.env.obs_space)
        if any(len(self.env.obs_space[k].shape) > 1 for k in self.keys):
            raise SystemExit(f"compare.py: SB3 agents take vector observations; {task} has image keys "
                             "(use its state observations, e.g. env.image=false)")
        size = sum(int(np.prod(self.env.obs_space[k].shape)) for k in self.keys)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (size,), np.float32)
        space = self.env.act_space
        if space.discrete and len(space.sizes) != 1:
            raise SystemExit("compare.py: SB3 agents take one discrete action; this env has several")
        self.discrete = space.discrete
        self.action_space = gym.spaces.Discrete(space.sizes[0]) if space.discrete else \
            gym.spaces.Box(-1.0, 1.0, (space.dim,), np.float32)

    def _obs(self, step: dict) -> np.ndarray:
        return np.concatenate([np.asarray(step[k], np.float32).reshape(-1) for k in self.keys])

    def reset(self, *, seed=None, options=None):
        return self._obs(self.env.reset()), {}

    def step(self, action):
        if self.discrete:
            action = np.eye(self.action_space.n, dtype=np.float32)[int(action)]
        step = self.env.step(np.asarray(action, np.float32))
        terminal = bool(step["is_terminal"])
        return self._obs(step), float(step["reward"]), terminal, bool(step["is_last"]) and not terminal, {}

    def close(self):
        self.env.close()


def evaluate_sb3(model, env: gym.Env, episodes: int) -> tuple[float, float]:
    returns = []
    for _ in range(episodes):
        obs, _ = env.reset()
        done, total = False, 0.0
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total, done = total + reward, terminated or truncated
        returns.append(total)
    return float(np.mean(returns)), float(np.std(returns))


def run_sb3(args, algo: str, seed: int) -> dict[str, Any]:
    import stable_baselines3 as sb3
    from stable_baselines3.common.callbacks import BaseCallback

    cfg = config_lib.make_config(config_lib.compose_presets([], default_suite_preset(args.task)))
    train_env, eval_env = GymView(args.task, cfg.env, seed), GymView(args.task, cfg.env, seed + 10_000)
    curve: list[tuple[int, float, float]] = []
    start = time.monotonic()

    class Evaluate(BaseCallback):
        def _on_training_start(self) -> None:
            curve.append((0, *evaluate_sb3(self.model, eval_env, args.eval_episodes)))

        def _on_step(self) -> bool:
            if self.num_timesteps % args.eval_every == 0 and self.num_timesteps <= args.steps:
                curve.append((self.num_timesteps, *evaluate_sb3(self.model, eval_env, args.eval_episodes)))
            return True

    policy = "MlpPolicy"
    tuned = ZOO.get((algo, args.task), {})
    model = getattr(sb3, algo)(policy, train_env, seed=seed, verbose=0, **tuned)
    model.learn(total_timesteps=args.steps, callback=Evaluate())
    if curve[-1][0] != args.steps:
        curve.append((args.steps, *evaluate_sb3(model, eval_env, args.eval_episodes)))
    train_env.close(), eval_env.close()
    return {"agent": f"sb3:{algo}", "seed": seed, "curve": curve, "wall_s": time.monotonic() - start,
            "hyperparameters": f"SB3 {sb3.__version__}, " + ("RL Zoo 22e3ff2 " + json.dumps(tuned) if tuned else
                                                               f"library defaults ({policy})")}


def run_reverie(args, agent: str, seed: int) -> dict[str, Any]:
    logdir = Path(args.runs_dir) / agent.replace("+", "_") / f"seed{seed}"
    rows = read_metrics(logdir) if (logdir / "metrics.jsonl").is_file() else []
    start = time.monotonic()
    if not rows or max(r.get("step", 0) for r in rows) < args.steps:
        overrides = [item for name, item in args.set if name == agent]
        command = [sys.executable, "-m", "reverie.cli", "train", "--env", args.task, "--logdir", str(logdir),
                   "--steps", str(args.steps), "--seed", str(seed), "--no-progress",
                   *[f"--preset={p}" for p in agent.split("+")], f"run.eval_every={args.eval_every}",
                   f"run.eval_episodes={args.eval_episodes}", *overrides]
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        done = subprocess.run(command, env={**os.environ, "PYTHONPATH": path}, check=False)
        if done.returncode != 0:
            raise SystemExit(f"compare.py: {agent} seed {seed} failed (exit {done.returncode}); see {logdir}")
        rows = read_metrics(logdir)
    curve = [(r["step"], r["eval/return_mean"], r.get("eval/return_std", 0.0)) for r in rows
             if r.get("eval/return_mean") is not None]
    return {"agent": agent, "seed": seed, "curve": curve, "wall_s": time.monotonic() - start,
            "hyperparameters": "Reverie presets " + ", ".join(agent.split("+")), "logdir": str(logdir)}


def value_at(curve, step: int) -> float | None:
    """The last eval at or before `step`."""
    before = [value for s, value, _ in curve if s <= step]
    return before[-1] if before else None


def write_results(args, results: list[dict[str, Any]]) -> Path:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "compare_" + args.task.replace(":", "_").replace("/", "_")
    (out / f"{name}.json").write_text(json.dumps({"task": args.task, "steps": args.steps, "results": results}, indent=2))
    marks = [args.steps * k // 5 for k in range(1, 6)]
    label = lambda m: f"{m // 1000}K" if m % 1000 == 0 and m else f"{m:,}"  # noqa: E731
    protocol = (f"{args.steps:,} policy steps per run; {args.eval_episodes} deterministic eval episodes every "
                f"{args.eval_every:,} steps on a separate env (seed + 10,000). `python benchmarks/compare.py "
                f"{args.command}`")
    lines = [f"# {args.task}: agents at equal env steps", "", protocol, "",
             "| agent | seed | final eval | " + " | ".join(map(label, marks)) + " | wall | settings |",
             "|---|---|---|" + "---|" * len(marks) + "---|---|"]
    for r in results:
        cells = [f"{v:.1f}" if (v := value_at(r["curve"], m)) is not None else "—" for m in marks]
        lines.append(f"| {r['agent']} | {r['seed']} | {r['curve'][-1][1]:.1f} | " + " | ".join(cells)
                     + f" | {r['wall_s'] / 60:.1f} min | {r['hyperparameters']} |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return out / f"{name}.md"
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        steps, values, _ = zip(*r["curve"])
        ax.plot(steps, values, label=f"{r['agent']} (seed {r['seed']})")
    ax.set(xlabel="policy steps", ylabel="eval return", title=args.task)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=120)
    plt.close(fig)
    return out / f"{name}.md"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="Pendulum-v1")
    parser.add_argument("--agent", action="append", required=True, help="a Reverie preset list (a+b) or sb3:ALGO")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--eval-every", type=int, default=2_000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--set", nargs=2, action="append", default=[], metavar=("AGENT", "KEY=VALUE"))
    parser.add_argument("--runs-dir", default="/tmp/reverie_compare_runs")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    args.command = " ".join(argv)
    for agent in args.agent:
        if agent.startswith("sb3:") and agent[4:] not in SB3_ALGOS:
            parser.error(f"unknown SB3 algorithm {agent[4:]!r}; use one of {', '.join(SB3_ALGOS)}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    results = [run_sb3(args, agent[4:], seed) if agent.startswith("sb3:") else run_reverie(args, agent, seed)
               for agent in args.agent for seed in args.seeds]
    print(write_results(args, results).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
