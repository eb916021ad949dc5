"""One throughput measurement of Reverie in a fresh process; prints one JSON line.

Run by `benchmarks/throughput.py` (which alternates these runs with the peer's); usable alone:

    python benchmarks/throughput_worker.py updates --preset size1m --obs vector
    python benchmarks/throughput_worker.py act --preset size1m --obs image --envs 8
    python benchmarks/throughput_worker.py e2e --preset debug --obs vector --ratio 64
    python benchmarks/throughput_worker.py peak
    python benchmarks/throughput_worker.py ablate --preset xs --kernels inverse_cdf few_rows_float32

`updates` times `Agent.train_step` on one fixed replay batch (16 × 64 by default) and counts the
FLOPs of one update with `torch.utils.flop_counter` (matmuls and convolutions, forward and
backward). `act` times `Agent.act` for N envs at once. `e2e` runs the real training loop
(`CartPole-v1` for vectors, `atari:pong` for 64×64 images) at a fixed train ratio and reads the
env steps per second after prefill from its metrics. `peak` measures the dense-matmul rate that
utilisation is quoted against. `ablate` times updates of one agent with every kernel on and with
each of `--kernels` switched off, the settings taking turns update by update (so the machine's
drift hits each alike); `-n` cycles through all settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reverie.agents import make_agent  # noqa: E402
from reverie.api import build_config  # noqa: E402
from reverie.envs.spaces import ArraySpec, action_space_from_gym  # noqa: E402
from reverie.run.host_memory import retain_freed_memory  # noqa: E402

VECTOR_DIM, VECTOR_ACTIONS = 4, 2  # CartPole-v1
IMAGE_SHAPE, IMAGE_ACTIONS = (64, 64, 3), 6  # Atari Pong, minimal action set
E2E_ENVS = {"vector": "CartPole-v1", "image": "atari:pong"}

# SheepRL's `dreamer_v3_XS` dimensions in Reverie's terms (see benchmarks/peers/): recurrent state
# 256, hidden 256, 32 × 32 latents, dense units 256 in 1 layer everywhere, CNN channels 24·(1, 2, 4, 8)
# with stride-2 kernel-4 convs as in DreamerV3 2023, one GRU block.
XS_OVERRIDES = {
    "model.rssm.deter": 256, "model.rssm.hidden": 256, "model.rssm.stoch": 32, "model.rssm.classes": 32,
    "model.rssm.blocks": 1, "model.rssm.img_layers": 1, "model.rssm.obs_layers": 1,
    "*.units": 256, "*.layers": 1, "*.depth": 24, "*.mults": [1, 2, 4, 8], "*.kernel": 4,
    "*.resize": "stride", "model.decoder.block_space": 8,
}
# The official per-update work: a 16 × 64 batch, imagination from all 1024 posterior states.
UPDATE_OVERRIDES = {"batch_size": 16, "batch_length": 64, "behavior.imag_last": 0,
                    "behavior.imag_horizon": 15}


def make_config(preset: str, obs: str, overrides: dict, **kwargs):
    presets = [] if preset == "xs" else [preset]
    extra = dict(XS_OVERRIDES) if preset == "xs" else {}
    return build_config(E2E_ENVS[obs], presets, {**extra, **UPDATE_OVERRIDES, **overrides}, **kwargs)


def spaces(obs: str):
    if obs == "vector":
        return {"vector": ArraySpec((VECTOR_DIM,), np.float32)}, action_space_from_gym(gym.spaces.Discrete(VECTOR_ACTIONS))
    return {"image": ArraySpec(IMAGE_SHAPE, np.uint8)}, action_space_from_gym(gym.spaces.Discrete(IMAGE_ACTIONS))


def fixed_batch(obs_space: dict, actions: int, B: int, T: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A replay-shaped batch of random data: (B, T, ...) per key, one episode start per row."""
    rng = np.random.default_rng(seed)
    batch = {
        "reward": rng.normal(size=(B, T)).astype(np.float32),
        "is_first": np.zeros((B, T), bool), "is_last": np.zeros((B, T), bool),
        "is_terminal": np.zeros((B, T), bool),
        "action": np.eye(actions, dtype=np.float32)[rng.integers(0, actions, (B, T))],
    }
    batch["is_first"][:, 0] = True
    for key, spec in obs_space.items():
        if spec.dtype == np.uint8:
            batch[key] = rng.integers(0, 256, (B, T, *spec.shape), dtype=np.uint8)
        else:
            batch[key] = rng.normal(size=(B, T, *spec.shape)).astype(np.float32)
    return batch


def build_agent(args):
    cfg = make_config(args.preset, args.obs, dict(args.set))
    if cfg.run.retain_memory:  # as the training loop does
        retain_freed_memory()
    torch.manual_seed(args.seed)
    obs_space, act_space = spaces(args.obs)
    return cfg, make_agent(obs_space, act_space, cfg, args.device), obs_space, act_space


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_updates(args) -> dict:
    cfg, agent, obs_space, act_space = build_agent(args)
    batch = fixed_batch(obs_space, act_space.dim, cfg.batch_size, cfg.batch_length, args.seed)
    first = time.perf_counter()
    agent.train_step(batch)  # includes torch.compile's compilation when run.compile is on
    synchronize(args.device)
    first = time.perf_counter() - first
    for _ in range(args.warmup):
        agent.train_step(batch)
    seconds = []
    for _ in range(args.n):
        synchronize(args.device)
        start = time.perf_counter()
        metrics = agent.train_step(batch)
        metrics["loss/total"].item()  # wait for the update, as a training loop reading metrics would
        synchronize(args.device)
        seconds.append(time.perf_counter() - start)
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        agent.train_step(batch)
    return {"seconds_per_update": seconds, "first_update_s": first, "flops_per_update": counter.get_total_flops(),
            "params": sum(p.numel() for p in agent.parameters() if p.requires_grad),
            "batch": [cfg.batch_size, cfg.batch_length], "precision": cfg.run.precision}


def measure_ablation(args) -> dict:
    """{"seconds": {"all": [...], name: [...]}}: cycle c times each setting once, in an order that
    rotates with c; one warm-up cycle first (it compiles every setting when run.compile is on)."""
    cfg, agent, obs_space, act_space = build_agent(args)
    batch = fixed_batch(obs_space, act_space.dim, cfg.batch_size, cfg.batch_length, args.seed)
    off = {name: dict.fromkeys(name.split("+"), False) for name in args.kernels}  # "a+b": both off
    settings = {"all": cfg.kernels, **{name: dataclasses.replace(cfg.kernels, **o) for name, o in off.items()}}
    names = list(settings)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for cycle in range(-max(args.warmup, 1), args.n):
        shift = cycle % len(names)
        for name in names[shift:] + names[:shift]:
            agent.cfg.kernels = settings[name]
            synchronize(args.device)
            start = time.perf_counter()
            agent.train_step(batch)["loss/total"].item()
            synchronize(args.device)
            if cycle >= 0:
                seconds[name].append(time.perf_counter() - start)
    return {"seconds": seconds, "precision": cfg.run.precision, "compile": cfg.run.compile}


def measure_act(args) -> dict:
    cfg, agent, obs_space, act_space = build_agent(args)
    N = args.envs
    data = fixed_batch(obs_space, act_space.dim, N, 1, args.seed)
    obs = {k: v[:, 0] for k, v in data.items() if k in obs_space}
    obs["is_first"] = np.zeros(N, bool)
    state = agent.init_state(N)
    for _ in range(args.warmup):
        state, _, _ = agent.act(state, obs, "train")
    seconds = []
    for _ in range(args.n):
        start = time.perf_counter()
        state, _, _ = agent.act(state, obs, "train")  # returns numpy: includes the device sync
        seconds.append(time.perf_counter() - start)
    return {"seconds_per_call": seconds, "envs": N,
            "policy_steps_per_s": N / statistics.median(seconds)}


def measure_e2e(args) -> dict:
    from reverie.run.train import train

    prefill = args.prefill
    overrides = {**dict(args.set), "run.train_ratio": args.ratio, "run.prefill": prefill,
                 "run.eval_every": 0, "run.report_every": 0, "run.log_every": 2.0,
                 "run.checkpoint_every": 1e6, "run.device": args.device, "env.num_envs": args.envs,
                 "env.parallel": args.envs > 1}
    with tempfile.TemporaryDirectory() as logdir:
        cfg = make_config(args.preset, args.obs, overrides, logdir=logdir, steps=prefill + args.steps)
        result = train(cfg, progress=False)
        rows = [json.loads(line) for line in (Path(logdir) / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "fps" in r]
    steps = seconds = 0.0
    for previous, row in zip(rows, rows[1:]):
        if previous["step"] >= prefill and row["fps"]:
            delta = row["step"] - previous["step"]
            steps += delta
            seconds += delta / row["fps"]
    return {"env": E2E_ENVS[args.obs], "train_ratio": args.ratio, "updates": result["updates"],
            "env_steps_per_s": steps / seconds if seconds else None, "measured_steps": steps}


def measure_peak(args) -> dict:
    """Dense matmul (2048 × 2048 × 2048) GFLOP/s, median of 10, per dtype."""
    out = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a = torch.randn(2048, 2048, dtype=dtype, device=args.device)
        b = torch.randn(2048, 2048, dtype=dtype, device=args.device)
        for _ in range(3):
            a @ b
        times = []
        for _ in range(10):
            synchronize(args.device)
            start = time.perf_counter()
            a @ b
            synchronize(args.device)
            times.append(time.perf_counter() - start)
        out[f"peak_gflops_{name}"] = 2 * 2048**3 / statistics.median(times) / 1e9
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["updates", "act", "e2e", "peak", "ablate"])
    parser.add_argument("--preset", default="size1m", help="debug, size1m, size12m, ... or xs (SheepRL XS dims)")
    parser.add_argument("--obs", default="vector", choices=["vector", "image"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps torch's default")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("-n", type=int, default=5, help="timed repetitions")
    parser.add_argument("--envs", type=int, default=8, help="act/e2e: envs stepped together")
    parser.add_argument("--ratio", type=float, default=64.0, help="e2e: train ratio")
    parser.add_argument("--steps", type=int, default=512, help="e2e: env steps timed after prefill")
    parser.add_argument("--prefill", type=int, default=1024, help="e2e: random steps before training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kernels", nargs="*", default=[], help="ablate: the kernels to switch off one at a time (a+b: both together)")
    parser.add_argument("--set", nargs="*", default=[], type=lambda s: tuple(s.split("=", 1)),
                        help="extra config overrides key=value (e.g. run.precision=bfloat16)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    measure = {"updates": measure_updates, "act": measure_act, "e2e": measure_e2e, "peak": measure_peak,
               "ablate": measure_ablation}[args.what]
    result = measure(args)
    result.update({"what": args.what, "preset": args.preset, "obs": args.obs, "device": args.device,
                   "threads": torch.get_num_threads(), "torch": torch.__version__,
                   "overrides": dict(args.set), "machine": platform.processor() or platform.machine()})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
