"""Family benchmark: every agent preset on one task, with one CPU budget, curves on one plot.

For each preset it runs `benchmarks/learning.py` (K seeds, each a fresh `reverie train`), with the
same budget overrides for all presets so that the comparison is about the algorithms, not about
their original compute: by default batch 16 × 32, imagination from the last 16 states, train ratio
32, updates every step after 1000 random ones, evaluation every 2500 steps over 3 episodes, and for
the planner 100 candidates × 5 iterations (top 10). Those overrides replace the presets' own batch
shapes and schedules (Dreamer v1 and PlaNet: 50 × 50, 100 updates every 1000 steps) — the cost of
those on a 2-core CPU is in the README. `--parallel 2` runs two presets at a time (one per core).

PlaNet repeats each action (R = 2–8 per DeepMind Control task in its paper, 4 for most), so its
12-step plans look 12·R env steps ahead; it runs here with R = 4 (ACTION_REPEAT). The budget stays
in env steps: such a run gets steps/R agent steps, evaluates every eval_every/R agent steps and
replays train_ratio·R samples per agent step, the same updates per env step as the others; its
curve, steps to the threshold and final step are reported in env steps.

    python benchmarks/family.py                                  # Pendulum-v1, 4 presets + dreamerv3, seed 0
    python benchmarks/family.py --seeds 0 1 --steps 50000 --parallel 2
    python benchmarks/family.py --seeds 0 1 --steps 50000 planet:run.train_ratio=128   # one preset's key

Trailing key=value overrides apply to every preset, PRESET:key=value ones to that preset only (after
the common ones). Writes family_<task>.json, .md and .png (one line per preset and seed) to --out;
each preset's own learning_<task>_<preset>.* files land there too.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from plots import pyplot

HERE = Path(__file__).resolve().parent
PRESETS = ["dreamerv3", "dreamerv3_2023", "dreamerv2", "dreamerv1", "planet"]
BUDGET = ["batch_size=16", "batch_length=32", "behavior.imag_last=16", "run.train_ratio=32", "run.train_every=1",
          "run.prefill=1000", "run.eval_every=2500", "run.eval_episodes=3", "behavior.planner.candidates=100",
          "behavior.planner.iterations=5", "behavior.planner.top_k=10", "run.threads=1"]
THRESHOLDS = {"Pendulum-v1": -400.0, "CartPole-v1": 475.0}
ACTION_REPEAT = {"planet": 4}  # env steps per agent step, for presets whose method defines one


def setting(overrides: list[str], key: str) -> float:
    """The last value given for `key` in key=value overrides."""
    return float(next(o.split("=", 1)[1] for o in reversed(overrides) if o.startswith(key + "=")))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="Pendulum-v1")
    parser.add_argument("--presets", nargs="+", default=PRESETS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--parallel", type=int, default=2, help="presets trained at the same time")
    parser.add_argument("--max-minutes", type=float, default=90.0, help="wall-clock limit per seed")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--runs-dir", default="/tmp/reverie_family_runs")
    parser.add_argument("--extend", action="store_true",
                        help="continue shorter finished runs of the same config up to --steps (learning.py --extend)")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: tabulate the existing runs as they are (learning.py --report)")
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    args = parser.parse_args([a for a in argv if a not in overrides])
    scoped = [o for o in overrides if ":" in o.split("=", 1)[0]]
    args.overrides = BUDGET + [o for o in overrides if o not in scoped]  # later keys win
    args.preset_overrides = {}
    for override in scoped:
        preset, key_value = override.split(":", 1)
        if preset not in args.presets:
            parser.error(f"{override}: '{preset}' is not among --presets ({' '.join(args.presets)})")
        args.preset_overrides.setdefault(preset, []).append(key_value)
    return args


def run_preset(args: argparse.Namespace, preset: str) -> Path:
    """learning.py for one preset; returns its JSON result."""
    threshold = THRESHOLDS.get(args.task)
    repeat, name = ACTION_REPEAT.get(preset, 1), preset
    overrides = args.overrides + args.preset_overrides.get(preset, [])
    if repeat > 1:  # the same budget in env steps (see the module docstring)
        overrides = [*overrides, f"env.action_repeat={repeat}",
                     f"run.eval_every={int(setting(overrides, 'run.eval_every')) // repeat}",
                     f"run.train_ratio={setting(overrides, 'run.train_ratio') * repeat:g}"]
        name = f"{preset}_repeat{repeat}"
    command = [sys.executable, str(HERE / "learning.py"), "--task", args.task, "--preset", preset,
               "--seeds", *map(str, args.seeds), "--steps", str(args.steps // repeat), "--out", args.out,
               "--runs-dir", f"{args.runs_dir}/{name}", "--max-minutes", str(args.max_minutes),
               *(["--threshold", str(threshold), "--stay-threshold", str(threshold)] if threshold is not None else []),
               *(["--extend"] if args.extend else []),
               *(["--report"] if args.report else []), *overrides]
    log = Path(args.runs_dir) / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:  # a --report or --extend pass keeps the training output
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode
    result = Path(args.out) / f"learning_{args.task.replace(':', '_')}_{preset}.json"
    if code != 0 or not result.exists():
        raise RuntimeError(f"{preset}: learning.py exited with {code}; see {log}")
    return result


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        paths = dict(zip(args.presets, pool.map(lambda p: run_preset(args, p), args.presets)))
    results = {preset: json.loads(path.read_text()) for preset, path in paths.items()}
    threshold = THRESHOLDS.get(args.task)
    rows = rows_of(results)
    summary = {"task": args.task, "threshold": threshold, "steps": args.steps, "seeds": args.seeds,
               "overrides": args.overrides, "preset_overrides": args.preset_overrides,
               "command": " ".join(["python", "benchmarks/family.py", *argv]),
               "wall_s": round(time.monotonic() - start, 1), "git_commit": next(iter(results.values()))["git_commit"],
               "runs": rows}
    out = Path(args.out)
    stem = f"family_{args.task.replace(':', '_')}"
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(summary))
    plot(out / f"{stem}.png", summary)
    print((out / f"{stem}.md").read_text())
    return 0


def rows_of(results: dict[str, dict]) -> list[dict[str, Any]]:
    """One table row per preset and seed from learning.py results, with steps in env steps."""
    rows = []
    for preset, result in results.items():
        repeat = result["config"]["resolved"]["env"]["action_repeat"]
        for seed in result["seeds"]:
            curve = [(step * repeat, mean, std) for step, mean, std in seed["eval_curve"]]
            hit = seed["steps_to_threshold"]
            rows.append({"preset": preset, "seed": seed["seed"], "action_repeat": repeat,
                         "final_step": seed["final_step"] * repeat,
                         "steps_to_threshold": None if hit is None else hit * repeat,
                         "best_eval": max((mean for _, mean, _ in curve), default=None),
                         "last3": seed["last3_eval_returns"], "updates": seed["updates"], "wall_s": seed["wall_s"],
                         "eval_curve": curve})
    return rows


def markdown(summary: dict[str, Any]) -> str:
    fmt = lambda v: "—" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}")  # noqa: E731
    thr = summary["threshold"]
    lines = [f"# The Dreamer family on {summary['task']}", "",
             f"Commit `{summary['git_commit'][:12]}`; up to {summary['steps']:,} env steps per run; the same "
             f"budget for every preset: `{' '.join(summary['overrides'])}`."
             + "".join(f" For `{p}` also: `{' '.join(o)}`." for p, o in summary.get("preset_overrides", {}).items())
             + " Train ratios count replayed samples per env step: an action-repeating preset replays"
             " ratio × repeat per agent step.", "",
             f"| preset | seed | env steps run | steps to {thr:g} | best eval | last 3 evals | updates | wall |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summary["runs"]:
        repeat = f" (action repeat {r['action_repeat']})" if r.get("action_repeat", 1) > 1 else ""
        lines.append(f"| `{r['preset']}`{repeat} | {r['seed']} | {fmt(r['final_step'])} | "
                     f"{fmt(r['steps_to_threshold'])} | {fmt(r['best_eval'])} | {', '.join(fmt(v) for v in r['last3'])} | {fmt(r['updates'])} | "
                     f"{(r['wall_s'] or 0) / 60:.0f} min |")
    lines += ["", "![curves](" + f"family_{summary['task'].replace(':', '_')}.png)", "", "```", summary["command"], "```", ""]
    return "\n".join(lines)


def plot(path: Path, summary: dict[str, Any]) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colors = {}
    for r in summary["runs"]:
        if not r["eval_curve"]:
            continue
        steps, mean, _ = zip(*r["eval_curve"])
        color = colors.setdefault(r["preset"], f"C{len(colors)}")
        ax.plot(steps, mean, marker=".", color=color, alpha=0.9,
                label=r["preset"] if sum(x["preset"] == r["preset"] for x in summary["runs"][:summary["runs"].index(r) + 1]) == 1 else None)
    if summary["threshold"] is not None:
        ax.axhline(summary["threshold"], color="grey", linestyle="--", linewidth=1, label="threshold")
    ax.set(xlabel="env steps", ylabel="eval return (mean over episodes)", title=f"The Dreamer family on {summary['task']}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
