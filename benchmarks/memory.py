"""Memory benchmark: does an agent remember what it saw many steps ago? POPGym's tasks, beside memoryless references.

Six tasks from POPGym (Morad et al. 2023, `pip install popgym`), each trained --steps env steps per
seed and evaluated every --eval-every steps (--eval-episodes deterministic episodes, Reverie's own
evaluation). POPGym scales every task's rewards so that an episode's return lies in [-1, 1] (the
CartPole ones in [0, 1]) and 1.0 is perfect: that return is the normalised score, with no
further rescaling. A run is one `reverie train` per (task, variant, seed); a variant is a list of
presets and overrides:

    --variant NAME [+PRESET ...] [KEY=VALUE ...]       e.g. --variant bl64 batch_length=64

Default variants: `default` (Reverie's defaults for a Gymnasium env), `memory` (`--preset memory`),
`muzero` and `tdmpc2` (their latent is an MLP of the current observation: no recurrence, which the
table says; TD-MPC2 takes Box actions only and POPGym's are Discrete, so its row holds the line the
CLI refuses it with). Two memoryless references per task, measured on the same env:
  * the best constant action (every action played for --constant-episodes episodes; the best one's
    return measured again on as many fresh episodes);
  * Stable-Baselines3 PPO with its default MLP policy, which sees only the current observation,
    trained and evaluated with the same steps, seeds and protocol (compare.py's `run_sb3`).
The reference is the better of the two; a variant "uses memory" on a task when its mean final
return exceeds the reference by more than the seeds' spread (the larger max - min of the variant's
and PPO's seeds).

Jobs run --parallel at a time, each on a core of its own (`taskset`, one thread). A finished run in
--runs-dir is reused; an unfinished one resumes (`reverie train` continues a run in its logdir).
--report trains nothing and tabulates what exists. Writes memory[_<tag>].json, .md and .png.

    python benchmarks/memory.py                                    # 6 tasks x 4 variants x seeds 0 1
    python benchmarks/memory.py --tasks RepeatFirstEasy CountRecallEasy --variants default \\
        --variant bl16 batch_length=16 --variant context1 replay.context=1 --tag levers
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from compare import GymView, run_sb3, value_at
from learning import git
from plots import pyplot
from throughput_compare import cpu_name

TASKS = {  # POPGym name -> what a policy must hold in memory to score
    "RepeatFirstEasy": "the episode's first card, for 51 steps",
    "RepeatPreviousEasy": "the cards of the last k = 4 steps",
    "CountRecallEasy": "how often each of 2 colours has been dealt, to answer a query",
    "AutoencodeEasy": "52 cards watched, to play them back in reverse",
    "PositionOnlyCartPoleEasy": "velocities, from positions over time",
    "VelocityOnlyCartpoleEasy": "positions, from velocities over time",
}
VARIANTS = {"default": [], "memory": ["+memory"], "muzero": ["+muzero"], "tdmpc2": ["+tdmpc2"]}
NO_RECURRENCE = {"muzero": "no recurrence: its representation network sees the current observation only",
                 "tdmpc2": "no recurrence: its encoder sees the current observation only"}


def env_id(task: str) -> str:
    return f"popgym:popgym-{task}-v0"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--variants", nargs="*", default=None, choices=list(VARIANTS),
                        help="built-in variants to run (default: all of them unless --variant is given)")
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME [ITEM]",
                        help="a variant of your own: a name, then +PRESET and KEY=VALUE items")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--constant-episodes", type=int, default=100)
    parser.add_argument("--no-ppo", action="store_true", help="leave the PPO reference out")
    parser.add_argument("--parallel", type=int, default=2, help="jobs at a time, one core each")
    parser.add_argument("--runs-dir", default="/tmp/reverie_memory_runs")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--tag", default="")
    parser.add_argument("--report", action="store_true", help="train nothing: tabulate the runs as they are")
    parser.add_argument("--reference-job", nargs=3, metavar=("TASK", "SEED", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.command = " ".join(["python", "benchmarks/memory.py", *argv])
    chosen = args.variants if args.variants is not None else ([] if args.variant else list(VARIANTS))
    args.variant_items = {name: VARIANTS[name] for name in chosen}
    for name, *items in args.variant:
        bad = [i for i in items if not (i.startswith("+") or "=" in i)]
        if bad or name in args.variant_items:
            parser.error(f"--variant {name}: " + (f"{bad[0]!r} is neither +PRESET nor KEY=VALUE" if bad
                                                  else "that name is taken; choose another"))
        args.variant_items[name] = items
    return args


# --------------------------------------------------------------------------------------------- jobs


def reverie_job(args, task: str, variant: str, seed: int, core: int | None) -> dict[str, Any]:
    """One `reverie train` run (reused when finished, resumed when not); its eval curve."""
    logdir = Path(args.runs_dir) / task / variant / f"seed{seed}"
    side = logdir.parent / f"seed{seed}.json"
    result = {"task": task, "variant": variant, "seed": seed, "logdir": str(logdir)}
    if side.is_file() and (known := json.loads(side.read_text())).get("refused"):
        return {**result, "refused": known["refused"]}
    if not args.report and last_step(logdir) < args.steps:
        items = args.variant_items[variant]
        command = [*pinned(core), sys.executable, "-m", "reverie.cli", "train", "--env", env_id(task),
                   "--logdir", str(logdir), "--steps", str(args.steps), "--seed", str(seed), "--no-progress",
                   *[f"--preset={i[1:]}" for i in items if i.startswith("+")], "run.threads=1",
                   f"run.eval_every={args.eval_every}", f"run.eval_episodes={args.eval_episodes}",
                   *[i for i in items if not i.startswith("+")]]
        logdir.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        with open(logdir.parent / f"seed{seed}.log", "a") as log:
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=job_env(), check=False)
        if done.returncode == 2:  # the CLI refused the config or env with one line: the table shows it
            line = (logdir.parent / f"seed{seed}.log").read_text().strip().splitlines()[-1]
            side.write_text(json.dumps({"refused": line}) + "\n")
            return {**result, "refused": line}
        if done.returncode != 0:
            raise RuntimeError(f"{task} {variant} seed {seed} failed (exit {done.returncode}); see {logdir.parent}")
        previous = json.loads(side.read_text()).get("wall_s", 0.0) if side.is_file() else 0.0
        side.write_text(json.dumps({"wall_s": previous + time.monotonic() - start, "command": command}) + "\n")
    curve = eval_curve(logdir)
    wall = json.loads(side.read_text()).get("wall_s") if side.is_file() else None
    return {**result, "curve": curve, "final_step": curve[-1][0] if curve else 0, "wall_s": wall}


def reference_job(args, task: str, seed: int, core: int | None) -> dict[str, Any]:
    """The memoryless references for one seed (PPO, and on seed 0 the best constant action), cached as JSON
    and measured again when the cache holds another --steps budget or lacks PPO."""
    out = Path(args.runs_dir) / task / "reference" / f"seed{seed}.json"
    cached = json.loads(out.read_text()) if out.is_file() else {}
    if (cached.get("steps") != args.steps or ("ppo" not in cached and not args.no_ppo)) and not args.report:
        out.parent.mkdir(parents=True, exist_ok=True)
        command = [*pinned(core), sys.executable, str(Path(__file__).resolve()), "--reference-job", task, str(seed),
                   str(out), "--steps", str(args.steps), "--eval-every", str(args.eval_every),
                   "--eval-episodes", str(args.eval_episodes), "--constant-episodes", str(args.constant_episodes),
                   *(["--no-ppo"] if args.no_ppo else [])]
        with open(out.with_suffix(".log"), "a") as log:
            if subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=job_env(), check=False).returncode:
                raise RuntimeError(f"{task} reference seed {seed} failed; see {out.with_suffix('.log')}")
    return {"task": task, "seed": seed, **(json.loads(out.read_text()) if out.is_file() else {})}


def measure_references(args) -> int:
    """--reference-job: runs in a subprocess of its own (one core, one thread)."""
    import torch

    torch.set_num_threads(1)
    task, seed, out = args.reference_job[0], int(args.reference_job[1]), Path(args.reference_job[2])
    result: dict[str, Any] = {"steps": args.steps}  # the budget the cache was measured at
    if seed == 0:
        result["constant"] = best_constant(env_id(task), args.constant_episodes)
    if not args.no_ppo:
        sb3_args = argparse.Namespace(task=env_id(task), steps=args.steps, eval_every=args.eval_every,
                                      eval_episodes=args.eval_episodes)
        ppo = run_sb3(sb3_args, "PPO", seed)
        result["ppo"] = {k: ppo[k] for k in ("curve", "wall_s", "hyperparameters")}
    out.write_text(json.dumps(result) + "\n")
    return 0


def best_constant(task_id: str, episodes: int) -> dict[str, Any]:
    """The best constant action: every action played on every step for `episodes` episodes (env seed
    10,000); the best one's return is then measured afresh (seed 20,000), free of the choice's bias."""
    from reverie import config as config_lib
    from reverie.envs import default_suite_preset

    cfg = config_lib.make_config(config_lib.compose_presets([], default_suite_preset(task_id)))

    def mean_return(action: int, seed: int) -> float:
        env, returns = GymView(task_id, cfg.env, seed), []
        for _ in range(episodes):
            env.reset()
            done, total = False, 0.0
            while not done:
                _, reward, terminated, truncated, _ = env.step(action)
                total, done = total + reward, terminated or truncated
            returns.append(total)
        env.close()
        return float(np.mean(returns))

    actions = GymView(task_id, cfg.env, 0).action_space.n
    best = int(np.argmax([mean_return(a, 10_000) for a in range(actions)]))
    return {"action": best, "return": mean_return(best, 20_000), "episodes": episodes}


def pinned(core: int | None) -> list[str]:
    return ["taskset", "-c", str(core)] if core is not None and shutil.which("taskset") else []


def job_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def last_step(logdir: Path) -> int:
    curve = eval_curve(logdir)
    return curve[-1][0] if curve else -1


def eval_curve(logdir: Path) -> list[tuple[int, float, float]]:
    from reverie.logging import read_metrics

    if not (logdir / "metrics.jsonl").is_file():
        return []
    return [(r["step"], r["eval/return_mean"], r.get("eval/return_std", 0.0)) for r in read_metrics(logdir)
            if r.get("eval/return_mean") is not None]


def run_all(args) -> tuple[list[dict], list[dict]]:
    """Every job, --parallel at a time, each given a free core."""
    cores: queue.Queue = queue.Queue()
    for core in range(args.parallel):
        cores.put(core if args.parallel > 1 else None)

    def on_core(job, *rest):
        core = cores.get()
        try:
            return job(args, *rest, core)
        finally:
            cores.put(core)

    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        refs = [pool.submit(on_core, reference_job, t, s) for t in args.tasks for s in args.seeds]
        runs = [pool.submit(on_core, reverie_job, t, v, s) for t in args.tasks for v in args.variant_items
                for s in args.seeds]
        return [f.result() for f in runs], [f.result() for f in refs]


# ------------------------------------------------------------------------------------------ summary


def summarise(args, runs: list[dict], refs: list[dict]) -> dict[str, Any]:
    """Per task: the references, and per variant the seeds' final returns, mean, spread and verdict."""
    tasks = {}
    for task in args.tasks:
        constant = next((r["constant"] for r in refs if r["task"] == task and "constant" in r), None)
        ppo = [final(r["ppo"]["curve"], args.steps) for r in refs if r["task"] == task and "ppo" in r]
        ppo = [v for v in ppo if v is not None]
        candidates = ([constant["return"]] if constant else []) + ([float(np.mean(ppo))] if ppo else [])
        reference = max(candidates) if candidates else None
        variants = {}
        for variant in args.variant_items:
            mine = [r for r in runs if r["task"] == task and r["variant"] == variant]
            refused = next((r["refused"] for r in mine if r.get("refused")), None)
            finals = [final(r["curve"], args.steps) for r in mine if not r.get("refused")]
            finals = [v for v in finals if v is not None]
            entry: dict[str, Any] = {"refused": refused, "finals": finals, "note": NO_RECURRENCE.get(variant),
                                     "steps_run": [r.get("final_step", 0) for r in mine]}
            if finals:
                spread = max(np.ptp(finals), np.ptp(ppo) if len(ppo) > 1 else 0.0)
                entry.update(mean=float(np.mean(finals)), spread=float(np.ptp(finals)),
                             uses_memory=None if reference is None or len(finals) < 2  # no spread to judge by
                             else bool(np.mean(finals) - reference > spread))
            variants[variant] = entry
        tasks[task] = {"remember": TASKS[task], "constant": constant, "ppo_finals": ppo,
                       "ppo_mean": float(np.mean(ppo)) if ppo else None, "reference": reference, "variants": variants}
    return {"command": args.command, "git_commit": git("rev-parse", "HEAD"), "steps": args.steps, "seeds": args.seeds,
            "eval_every": args.eval_every, "eval_episodes": args.eval_episodes, "variants": args.variant_items,
            "machine": machine(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "tasks": tasks, "runs": runs, "references": refs}


def final(curve, steps: int) -> float | None:
    """The last eval at or before `steps`, if the run got there (else None)."""
    return value_at(curve, steps) if curve and curve[-1][0] >= steps else None


def machine() -> str:
    return f"{cpu_name() or 'unknown CPU'}, {os.cpu_count()} cores"


def markdown(summary: dict[str, Any]) -> str:
    names = list(summary["variants"])
    def fmt(v):
        return "—" if v is None else f"{v:.2f}"

    lines = [f"# Memory on POPGym: final eval return at {summary['steps']:,} env steps", "",
             (f"Commit `{summary['git_commit'][:12]}`, {summary['machine']}, {summary['date']}. Seeds "
             f"{', '.join(map(str, summary['seeds']))}; {summary['eval_episodes']} deterministic eval episodes every "
             f"{summary['eval_every']:,} steps. POPGym's returns: 1.0 is perfect, the card tasks' worst is -1.0. "
             "A cell: mean of the seeds (each seed); ✓ where the mean beats the memoryless reference (the better "
             "of the best constant action and PPO's MLP policy) by more than the seeds' spread (no verdict from one seed)."), "",
             "| task | must remember | best constant | PPO (MLP) | " + " | ".join(f"`{n}`" for n in names) + " |",
             "|---|---|---|---|" + "---|" * len(names)]
    for task, t in summary["tasks"].items():
        cells = []
        for name in names:
            v = t["variants"][name]
            if v["refused"]:
                cells.append("refused: " + v["refused"].removeprefix("reverie: error: "))
            elif "mean" in v:
                cells.append(f"{'✓ ' if v['uses_memory'] else ''}{fmt(v['mean'])} ({', '.join(map(fmt, v['finals']))})")
            else:
                cells.append(f"not run to {summary['steps']:,} (at {', '.join(f'{s:,}' for s in v['steps_run'])})")
        ppo = f"{fmt(t['ppo_mean'])} ({', '.join(map(fmt, t['ppo_finals']))})" if t["ppo_finals"] else "—"
        constant = fmt(t["constant"]["return"]) if t["constant"] else "—"
        lines.append(f"| {task} | {t['remember']} | {constant} | {ppo} | " + " | ".join(cells) + " |")
    notes = {n: NO_RECURRENCE[n] for n in names if n in NO_RECURRENCE}
    lines += ["", "Variants: " + "; ".join(f"`{n}` = {' '.join(items) or 'the defaults'}"
                                          + (f" ({notes[n]})" if n in notes else "")
                                          for n, items in summary["variants"].items()) + ".", "",
              f"![curves](memory{summary.get('suffix', '')}.png)", "", "```", summary["command"], "```", ""]
    return "\n".join(lines)


def plot(path: Path, summary: dict[str, Any]) -> None:
    plt = pyplot()
    if plt is None:
        return
    tasks = list(summary["tasks"])
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for i, variant in enumerate(summary["variants"]):
            curves = [r["curve"] for r in summary["runs"] if r["task"] == task and r["variant"] == variant
                      and r.get("curve")]
            if not curves:
                continue
            steps = sorted({s for c in curves for s, _, _ in c if all(any(x == s for x, _, _ in o) for o in curves)})
            values = np.array([[next(v for x, v, _ in c if x == s) for s in steps] for c in curves])
            ax.plot(steps, values.mean(0), color=f"C{i}", marker=".", label=variant)
            ax.fill_between(steps, values.min(0), values.max(0), color=f"C{i}", alpha=0.2)
        t = summary["tasks"][task]
        if t["ppo_mean"] is not None:
            ax.axhline(t["ppo_mean"], color="grey", linestyle="--", linewidth=1, label="PPO (MLP)")
        if t["constant"]:
            ax.axhline(t["constant"]["return"], color="black", linestyle=":", linewidth=1, label="best constant")
        ax.set(title=task, xlabel="env steps", ylabel="eval return")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(tasks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.reference_job:
        return measure_references(args)
    runs, refs = run_all(args)
    summary = summarise(args, runs, refs)
    summary["suffix"] = f"_{args.tag}" if args.tag else ""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"memory{summary['suffix']}"
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(summary))
    plot(stem.with_suffix(".png"), summary)
    print(stem.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
