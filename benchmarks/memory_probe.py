"""Memory probe: can the Dreamer world model alone learn to remember what a POPGym task's reward needs?

A full learning run (memory.py) mixes two questions: does the world model carry the cue in its
recurrent state, and does the actor learn to use it. This probe answers the first one, fast and
without an actor: it plays a task with uniformly random actions (--steps env steps for training,
--episodes held-out episodes on another seed), trains only the world model (its losses and its
optimiser, as the agent's update does) on --batch windows drawn uniformly from that stream, and
measures on the held-out episodes, each observed from its first step, how much the reward head
knows about the sign of each step's reward (right or wrong answer):

    memory = 1 - BCE(sign of r | the head's P(r > 0)) / H(sign of r)     over the steps with r != 0

Under a random policy a memoryless predictor knows only the base rate (e.g. 1/4 right on
RepeatFirst), which scores 0; a model that remembers perfectly scores 1. It is reported over all
steps and by the step within the episode (1-10, 11-30, 31+), which shows how far back the memory
reaches, beside the R² of the head's mean (the reward imagination uses), which the head's spread
over its wide symexp bins can push far below 0 at POPGym's small rewards (±1/50 per step).

Where the task's observation is categorical (the card tasks), the probe also asks whether the cue
reaches h at all, apart from the reward: a linear softmax probe reads the episode's first
observation from h_t alone in each bucket (fitted on half the held-out episodes, accuracy on the
other half; chance is 1/classes). High accuracy beside zero reward memory says the readout of the
reward is what fails; chance says the recurrent state forgot the cue. A
variant is a list of presets and overrides, as in memory.py; the default variants each change one
of the levers the memory issue names.

    python benchmarks/memory_probe.py --task RepeatFirstEasy --updates 1500
    python benchmarks/memory_probe.py --variants default --variant bl64 batch_length=64
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from learning import git
from memory import TASKS, env_id, machine

from reverie import config as config_lib
from reverie.agents.dreamer import DreamerAgent
from reverie.agents.dreamer.world_model import classes_of
from reverie.envs import make_env

MODEL_LOSSES = ("rec", "rew", "con", "dyn", "rep")
LEVERS = {  # name -> overrides; each changes one thing against `default`
    "default": [],
    "bl16": ["batch_length=16"],
    "bl64": ["batch_length=64"],
    "free_nats0.1": ["model.rssm.free_nats=0.1"],
    "rew_scale10": ["loss_scales.rew=10"],
    "deter1024": ["model.rssm.deter=1024"],
    "gru_core": ["model.rssm.core=gru"],
    "update_bias-4": ["model.rssm.update_bias=-4"],
}
BUCKETS = ((1, 10), (11, 30), (31, 10_000))
COLUMNS = {"all": "memory, all steps", "r2_mean": "R² of the mean",
           "p_right_1": "P(r > 0) at step 1, right / wrong answers"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="RepeatFirstEasy", choices=list(TASKS))
    parser.add_argument("--variants", nargs="*", default=None, choices=list(LEVERS))
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME [ITEM]")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=20_000, help="random-policy env steps to train on")
    parser.add_argument("--episodes", type=int, default=200, help="held-out episodes")
    parser.add_argument("--updates", type=int, default=1500)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reward-scale", type=float, default=1.0,
                        help="multiply the task's rewards (a diagnostic of the reward's size, not a config key)")
    parser.add_argument("--from-episode-start", action="store_true",
                        help="every training window begins at an episode's first step (with batch_length=3: a third "
                             "of the samples are step 1, whose answer needs no memory beyond one step)")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--tag", default="")
    args = parser.parse_args(argv)
    args.command = " ".join(["python", "benchmarks/memory_probe.py", *argv])
    chosen = args.variants if args.variants is not None else ([] if args.variant else list(LEVERS))
    args.variant_items = {name: LEVERS[name] for name in chosen}
    for name, *items in args.variant:
        args.variant_items[name] = items
    return args


def make_cfg(task: str, items: list[str], seed: int):
    presets = [i[1:] for i in items if i.startswith("+")]
    overrides = [i for i in items if not i.startswith("+")]
    cfg = config_lib.make_config(config_lib.compose_presets(presets, None), overrides)
    if cfg.agent.family != "dreamer":
        raise SystemExit(f"memory_probe.py: probes the Dreamer world model; {cfg.agent.family} has none")
    return cfg


def random_stream(task: str, cfg, seed: int, steps: int) -> tuple[dict[str, np.ndarray], Any]:
    """`steps` consecutive env steps under uniformly random actions: {key: (steps, ...)}; the
    action stored with a step is the one taken after it (the replay's convention)."""
    env = make_env(env_id(task), cfg.env, seed)
    rng = np.random.default_rng([seed, 1])  # not `seed` alone: that would draw the env's own random numbers
    sizes = env.act_space.sizes
    if not env.act_space.discrete or len(sizes) != 1:
        raise SystemExit(f"memory_probe.py: {task} needs one discrete action; it has {env.act_space}")
    rows, step = [], env.reset()
    for _ in range(steps):
        action = np.eye(sizes[0], dtype=np.float32)[rng.integers(sizes[0])]
        rows.append({**{k: np.asarray(v) for k, v in step.items()}, "action": action})
        step = env.reset() if step["is_last"] else env.step(action)
    env.close()
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}, env


def episodes_of(stream: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The stream's whole episodes stacked (E, L, ...); the card tasks' episodes have one length."""
    starts = np.flatnonzero(stream["is_first"])
    lengths = set(np.diff(starts).tolist())
    if len(lengths) != 1:
        raise SystemExit("memory_probe.py: the probe needs episodes of one length (POPGym's card tasks)")
    length = lengths.pop()
    return {k: np.stack([v[s:s + length] for s in starts[:-1]]) for k, v in stream.items()}


def windows(stream: dict[str, np.ndarray], batch: int, length: int, rng: np.random.Generator,
            from_episode_start: bool = False) -> dict:
    """`batch` windows of `length` steps {key: (batch, length, ...)}, starting anywhere in the stream
    (as replay samples them) or, with `from_episode_start`, at episodes' first steps."""
    if from_episode_start:
        firsts = np.flatnonzero(stream["is_first"])
        starts = rng.choice(firsts[firsts <= len(stream["is_first"]) - length], batch)
    else:
        starts = rng.integers(0, len(stream["is_first"]) - length, batch)
    index = starts[:, None] + np.arange(length)[None]
    return {k: v[index] for k, v in stream.items()}


@torch.no_grad()
def held_out_memory(agent: DreamerAgent, held_out: dict[str, torch.Tensor], cue: tuple[str, int] | None) -> dict[str, float]:
    """The reward head's memory (`reward_memory`) and, for a task with a categorical observation,
    how well h_t alone holds the episode's first observation (`cue_memory`; cue: that key and its
    number of classes), on held-out episodes each observed from its first step."""
    agent.eval()
    E = held_out["is_first"].shape[0]
    _, post, _ = agent.wm.loss(held_out, agent.wm.initial(E, agent.device))
    result = reward_memory(agent.wm.reward(agent.wm.features(post)), held_out["reward"])
    if cue is not None:
        key, classes = cue
        result.update(cue_memory(post["deter"].float(), held_out[key][:, 0].argmax(-1), classes))
    agent.train()
    return result


def reward_memory(head, reward: torch.Tensor) -> dict[str, float]:
    """How much of the reward's sign (E, L) the reward head's distribution predicts: 1 - BCE(sign |
    model) / H(sign), over the steps with a nonzero reward (all, and by step within the episode);
    and the R² of the head's mean over the same steps."""
    probs = head.logits.float().softmax(-1)  # (E, L, bins)
    positive, negative = probs[..., head.bins > 0].sum(-1), probs[..., head.bins < 0].sum(-1)
    p = (positive / (positive + negative)).clamp(1e-6, 1 - 1e-6)  # P(reward > 0 | reward != 0)
    mean = head.mean()
    t = torch.arange(reward.shape[1]).expand_as(reward)
    result = {}
    for name, (lo, hi) in [("all", (1, 10_000)), *[(bucket_name(lo, hi), (lo, hi)) for lo, hi in BUCKETS]]:
        keep = (t >= lo) & (t <= hi) & (reward != 0)
        if keep.any():
            y, q = (reward[keep] > 0).float(), p[keep]
            base = y.mean().clamp(1e-6, 1 - 1e-6)
            entropy = -(base * base.log() + (1 - base) * (1 - base).log())
            bce = -(y * q.log() + (1 - y) * (1 - q).log()).mean()
            result[name] = float(1.0 - bce / entropy)
            if name == "all":
                r = reward[keep]
                result["r2_mean"] = float(1.0 - ((r - mean[keep]) ** 2).mean() / r.var(unbiased=False).clamp_min(1e-12))
    first = reward[:, 1]  # at step 1 both parts of the answer (a_0, the first obs) are one step back
    if (first > 0).any() and (first < 0).any():
        result["p_right_1"], result["p_wrong_1"] = float(p[:, 1][first > 0].mean()), float(p[:, 1][first < 0].mean())
    return result


def cue_memory(deter: torch.Tensor, cue: torch.Tensor, classes: int) -> dict[str, float]:
    """Accuracy of a linear softmax probe reading the first observation's class cue (E,) from h_t
    (E, L, D) at the steps of each bucket: fitted (L-BFGS, standardised h, a small L2 penalty) on
    the first half of the episodes, scored on the other half. Chance is 1 / classes: h has
    forgotten the cue; 1: h holds it where a linear readout finds it."""
    half = deter.shape[0] // 2
    result = {}
    for lo, hi in BUCKETS:
        steps = torch.arange(lo, min(hi, deter.shape[1] - 1) + 1)
        x = deter[:, steps]  # (E, S, D)
        mu, sd = x[:half].flatten(0, 1).mean(0), x[:half].flatten(0, 1).std(0) + 1e-6
        x = (x - mu) / sd
        y = cue[:, None].expand(-1, len(steps))
        weight, bias = fit_linear_probe(x[:half].flatten(0, 1), y[:half].flatten(), classes)
        right = (x[half:] @ weight + bias).argmax(-1) == y[half:]
        result[f"cue {bucket_name(lo, hi)}"] = float(right.float().mean())
    return result


def fit_linear_probe(x: torch.Tensor, y: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression x (N, D) → y (N,) by L-BFGS with a 1e-3 L2 penalty: (D, C), (C,)."""
    weight = torch.zeros(x.shape[-1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight + bias, y) + 1e-3 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


def bucket_name(lo: int, hi: int) -> str:
    return f"{lo}-{hi if hi < 10_000 else ''}"


def probe(args, name: str, items: list[str], seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    cfg = make_cfg(args.task, items, seed)
    stream, env = random_stream(args.task, cfg, seed, args.steps)
    held_out = episodes_of(random_stream(args.task, cfg, seed + 10_000, args.episodes * 60)[0])
    for data in (stream, held_out):
        data["reward"] = data["reward"] * np.float32(args.reward_scale)
    agent = DreamerAgent(env.obs_space, env.act_space, cfg)
    held = agent.to_tensors({k: v[:args.episodes] for k, v in held_out.items()})
    cue = next(((k, classes_of(spec)[0]) for k, spec in env.obs_space.items() if len(classes_of(spec)) == 1), None)
    rng = np.random.default_rng(seed)
    curve, start = [], time.monotonic()
    for update in range(1, args.updates + 1):
        data = agent.to_tensors(windows(stream, cfg.batch_size, cfg.batch_length, rng, args.from_episode_start))
        losses, _, _ = agent.wm.loss(data, agent.wm.initial(cfg.batch_size, agent.device))
        total = sum(agent.scales[k] * losses[k].float().mean() for k in MODEL_LOSSES)
        for optimizer in agent.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        total.backward()
        for optimizer in agent.optimizers.values():
            optimizer.step()
        if update % args.eval_every == 0 or update == args.updates:
            curve.append({"update": update, "loss_rew": float(losses["rew"].detach().mean()), **held_out_memory(agent, held, cue)})
            print(f"{args.task} {name} seed {seed}: {curve[-1]}", flush=True)
    return {"variant": name, "items": items, "seed": seed, "curve": curve, "wall_s": time.monotonic() - start}


def column_title(key: str) -> str:
    if key in COLUMNS:
        return COLUMNS[key]
    return f"first obs in h, steps {key[4:]}" if key.startswith("cue ") else f"memory, steps {key}"


def markdown(summary: dict[str, Any]) -> str:
    keys = ["all", *[bucket_name(lo, hi) for lo, hi in BUCKETS], "r2_mean", "p_right_1"]
    cues = [f"cue {bucket_name(lo, hi)}" for lo, hi in BUCKETS]
    keys += [k for k in cues if any(k in r["curve"][-1] for runs in summary["variants"].values() for r in runs)]
    lines = [f"# Memory probe on {summary['task']}: what the world model alone remembers of the reward", "",
             (f"Commit `{summary['git_commit'][:12]}`, {summary['machine']}, {summary['date']}. World model only, "
              f"{summary['updates']:,} updates on {summary['steps']:,} random-policy steps; on {summary['episodes']} held-out episodes "
              "the fraction of the reward sign's entropy the reward head removes (0 = a memoryless predictor, 1 = "
              "perfect memory), over all steps and by step within the episode, and the R² of the head's mean; "
              "where the observation is categorical, the accuracy of a linear probe reading the episode's first "
              "observation from h_t alone (chance 1/classes; fitted on half the held-out episodes, scored on the rest). "
              "Mean over seeds (each seed)."
              + (f" Rewards multiplied by {summary['reward_scale']:g}." if summary.get("reward_scale", 1) != 1 else "")
              + (" Every training window begins at an episode's first step." if summary.get("from_episode_start") else "")),
             "",
             "| variant | overrides | " + " | ".join(column_title(k) for k in keys) + " | wall per run |",
             "|---|---|" + "---|" * len(keys) + "---|"]
    for name, runs in summary["variants"].items():
        finals = [r["curve"][-1] for r in runs]
        cells = []
        for key in keys:
            values = [f[key] for f in finals if key in f]
            if key == "p_right_1" and values:
                wrong = [f["p_wrong_1"] for f in finals if key in f]
                cells.append(f"{np.mean(values):.3f} / {np.mean(wrong):.3f}")
            else:
                cells.append(f"{np.mean(values):.2f} ({', '.join(f'{v:.2f}' for v in values)})" if values else "—")
        wall = np.mean([r["wall_s"] for r in runs]) / 60
        lines.append(f"| `{name}` | {' '.join(runs[0]['items']) or '—'} | " + " | ".join(cells) + f" | {wall:.1f} min |")
    lines += ["", "```", summary["command"], "```", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = {name: [probe(args, name, items, seed) for seed in args.seeds]
                for name, items in args.variant_items.items()}
    summary = {"task": args.task, "command": args.command, "git_commit": git("rev-parse", "HEAD"), "machine": machine(),
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "steps": args.steps,
               "episodes": args.episodes, "updates": args.updates, "reward_scale": args.reward_scale, "seeds": args.seeds,
               "from_episode_start": args.from_episode_start,
               "variants": variants}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"memory_probe_{args.task}{'_' + args.tag if args.tag else ''}"
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(summary))
    print(stem.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
