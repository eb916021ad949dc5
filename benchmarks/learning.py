"""Learning benchmark: does Reverie solve a task from scratch, how fast, and how reliably?

For one task (default CartPole-v1) it trains K seeds one after another, each as a fresh
`reverie train` subprocess, and measures per seed:
  * env steps and wall-clock seconds (from the subprocess start) until the evaluation return first
    reaches the threshold (475 for CartPole); the time is when the CLI prints that eval line;
  * the eval curve [(step, return_mean, return_std)] and whether the last three evals all stay at
    or above the "stays solved" level (450 for CartPole);
  * total wall-clock, gradient updates, achieved train ratio and env steps per second;
and across seeds: median/min/max of steps- and wall-to-threshold, seeds solved, seeds that stayed
solved, and the eval return at five checkpoints (1/5 … 5/5 of --steps: 10K … 50K by default; the
eval with the largest step at or below each).

With --reference (e.g. `dmc_proprio/cartpole_swingup`, see reference_curves.py) the published
DreamerV3 curve is drawn beside ours, in environment frames (policy steps × action repeat), and the
table compares the values at the end of the run, both as the mean of the evals in its last 30K frames.

A seed whose logdir already holds a finished run with the same config is reused, not rerun
(--rerun deletes it first); with --extend, a finished shorter run of the same config, or one that
--max-minutes stopped, is resumed up to --steps (its wall-clock and eval times continue from the first part); --report trains nothing and
tabulates the runs as they are (shorter ones included: their curves end where they stopped).
Writes learning_<task>[_<presets>][_nproc<N>].json, .md and .png (the plot needs matplotlib); the summary,
tables and plot are made by learning_report.py.

    python benchmarks/learning.py                                  # CartPole-v1, seeds 0 1 2
    python benchmarks/learning.py --seeds 0 --preset debug run.train_ratio=64 --out /tmp/bench
    python benchmarks/learning.py --task dmc:cartpole_swingup --preset dmc_proprio --threshold 478 \
        --reference dmc_proprio/cartpole_swingup --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's reverie (e.g. a git worktree), not the installed one

from reverie import api  # noqa: E402
from reverie import config as config_lib  # noqa: E402
from reverie.errors import UserError  # noqa: E402
from reverie.logging import read_metrics  # noqa: E402
from reverie.envs import default_suite_preset  # noqa: E402
from reverie.run.checkpoint import CKPT_PATTERN, list_checkpoints  # noqa: E402

import reference_curves  # noqa: E402  (benchmarks/reference_curves.py)
from learning_report import summarise, write_markdown, write_plot  # noqa: E402  (benchmarks/learning_report.py)

TASKS = {"CartPole-v1": {"threshold": 475.0, "stay": 450.0}}  # task → solved / stays-solved levels
EVAL_LINE = re.compile(r"^step ([\d,]+): eval return ")  # printed by reverie/run/train.py
FINAL_EVAL_LINE = re.compile(r"^final eval return ")
RECORD = "bench_run.json"  # our own timing record, next to the run's metrics.jsonl


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="Trailing key=value "
                                     "arguments are config overrides passed on to `reverie train`.")
    parser.add_argument("--task", default="CartPole-v1", help="Gymnasium id (default CartPole-v1)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=50_000, help="env steps per seed")
    parser.add_argument("--preset", action="append", default=[], help="repeatable, applied in order")
    parser.add_argument("--out", default="benchmarks/results", help="folder for JSON, markdown, PNG")
    parser.add_argument("--runs-dir", default="/tmp/reverie_bench_runs", help="logdirs go to DIR/task/seedN")
    parser.add_argument("--threshold", type=float, default=None, help="solved level (CartPole: 475)")
    parser.add_argument("--stay-threshold", type=float, default=None,
                        help="level the last 3 evals must hold (CartPole: 450; else --threshold)")
    parser.add_argument("--max-minutes", type=float, default=45.0, help="wall-clock limit per seed")
    parser.add_argument("--nproc", type=int, default=1, help="data-parallel ranks per run (reverie train --nproc)")
    parser.add_argument("--rerun", action="store_true", help="delete existing runs and train afresh")
    parser.add_argument("--extend", action="store_true",
                        help="resume finished shorter runs of the same config (or runs stopped by --max-minutes) "
                             "up to --steps instead of rerunning")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: tabulate the existing runs as they are, shorter ones included")
    parser.add_argument("--reference", default=None, choices=reference_curves.available(),
                        help="published DreamerV3 curve to compare with")
    # Overrides are split off by hand: argparse would feed them to the greedy --seeds list.
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    args = parser.parse_args([a for a in argv if a not in overrides])
    args.overrides = overrides
    if args.threshold is None:  # the task's own levels, unless --threshold says otherwise
        if args.task not in TASKS:
            parser.error(f"no default threshold for {args.task}; pass --threshold")
        args.threshold = TASKS[args.task]["threshold"]
        args.stay_threshold = TASKS[args.task]["stay"] if args.stay_threshold is None else args.stay_threshold
    if args.stay_threshold is None:
        args.stay_threshold = args.threshold
    return args


def task_slug(task: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", task)


def is_finished(logdir: Path, steps: int) -> bool:
    return any(int(CKPT_PATTERN.match(p.name).group(1)) >= steps for p in list_checkpoints(logdir / "checkpoints"))


def config_mismatch(logdir: Path, expected: dict[str, Any]) -> list[str]:
    """Config keys where the saved run differs from what this benchmark would run (logdir aside;
    run.steps too, since the checkpoints say how far a run got)."""
    def flat(tree: dict, prefix: str = "") -> dict[str, Any]:
        items: dict[str, Any] = {}
        for key, value in tree.items():
            items.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
        return items

    saved, wanted = flat(config_lib.to_dict(config_lib.load(logdir / "config.yaml"))), flat(expected)
    return sorted(k for k in saved.keys() | wanted.keys()
                  if k not in ("logdir", "run.steps") and saved.get(k) != wanted.get(k))


def train_seed(args: argparse.Namespace, seed: int, logdir: Path, before: dict | None = None) -> dict[str, Any]:
    """Run `reverie train` for one seed; tee its output; timestamp eval lines; kill at the limit.
    `before`: the record of the finished first part of the run that this call resumes."""
    command = [sys.executable, "-m", "reverie.cli", "train", "--logdir", str(logdir), "--steps", str(args.steps),
               "--no-progress", *(["--nproc", str(args.nproc)] if args.nproc > 1 else [])]
    if before is None:
        command += ["--env", args.task, "--seed", str(seed), *[f"--preset={p}" for p in args.preset], *args.overrides]
    logdir.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", "PYTHONPATH": path}
    offset = before["wall_s"] if before else 0.0  # times continue from the first part
    eval_times: dict[int, float] = {int(k): v for k, v in before["eval_times"].items()} if before else {}
    final_eval_time: list[float] = []
    start = time.monotonic() - offset
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            text=True, encoding="utf-8", errors="replace", start_new_session=True)

    def tee() -> None:
        with open(logdir / "stdout.log", "a" if before else "w", encoding="utf-8") as log:
            for line in proc.stdout:
                now = time.monotonic() - start
                log.write(line)
                log.flush()
                print(f"[seed {seed}] {line}", end="", flush=True)
                if match := EVAL_LINE.match(line):
                    eval_times[int(match.group(1).replace(",", ""))] = now
                elif FINAL_EVAL_LINE.match(line):
                    final_eval_time.append(now)

    reader = threading.Thread(target=tee, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=args.max_minutes * 60)
    except subprocess.TimeoutExpired:
        timed_out = True
        print(f"[seed {seed}] over --max-minutes {args.max_minutes:g}: stopping the run", flush=True)
        stop(proc)
    except KeyboardInterrupt:
        stop(proc)
        raise
    wall = time.monotonic() - start
    reader.join(timeout=10)
    if before:
        started_at, command = before["started_at"], [*before["command"], "&&", *command]
    record = {"command": command, "started_at": started_at, "wall_s": wall, "returncode": proc.returncode,
              "timed_out": timed_out, "eval_times": {str(k): v for k, v in eval_times.items()},
              "final_eval_time": final_eval_time[0] if final_eval_time else None}
    (logdir / RECORD).write_text(json.dumps(record, indent=2))
    return record


def stop(proc: subprocess.Popen) -> None:
    """Ctrl-C the run's process group (it closes its files), then kill it if it lingers."""
    for sig, grace in ((signal.SIGINT, 120), (signal.SIGKILL, 10)):  # a big checkpoint on a busy CPU takes a while
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=grace)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def analyse_seed(args: argparse.Namespace, seed: int, logdir: Path, record: dict | None,
                 cfg: dict[str, Any], action: str) -> dict[str, Any]:
    rows = read_metrics(logdir) if (logdir / "metrics.jsonl").is_file() else []
    curve = [(r["step"], r["eval/return_mean"], r.get("eval/return_std")) for r in rows
             if r.get("eval/return_mean") is not None]
    train_rows = [r for r in rows if "updates" in r]
    record = record or {}
    times = {int(k): v for k, v in record.get("eval_times", {}).items()}
    if curve and curve[-1][0] not in times and record.get("final_eval_time") is not None:
        times[curve[-1][0]] = record["final_eval_time"]  # "final eval return ..." carries no step
    hit = next((point for point in curve if point[1] >= args.threshold), None)
    last3 = [point[1] for point in curve[-3:]]
    final_step = max((r["step"] for r in rows), default=0)
    updates = train_rows[-1]["updates"] if train_rows else None
    trained_steps = final_step - cfg["run"]["prefill"]
    wall = record.get("wall_s")
    if record.get("timed_out"):
        status = "timed out"
    elif record.get("returncode") not in (None, 0):
        status = f"failed (exit {record['returncode']})"
    else:
        status = {"reuse": "reused", "extend": "extended", "train": "done"}[action]
    return {
        "seed": seed, "status": status, "logdir": str(logdir), "final_step": final_step,
        "steps_to_threshold": hit[0] if hit else None,
        "wall_s_to_threshold": times.get(hit[0]) if hit else None,
        "eval_curve": curve, "last3_eval_returns": last3,
        "stays_solved": len(last3) == 3 and min(last3) >= args.stay_threshold,
        "wall_s": wall, "updates": updates,
        "train_ratio_achieved": updates * cfg["batch_size"] * cfg["batch_length"] / trained_steps
        if trained_steps > 0 and updates is not None else None,
        "env_steps_per_s": final_step / wall if wall else None,
    }


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def plan_seed(args: argparse.Namespace, seed: int) -> tuple[Path, dict[str, Any], str]:
    """The seed's logdir, its resolved config, and what to do there: "reuse" a finished run,
    "extend" a finished shorter one (--extend), or "train" afresh."""
    logdir = Path(args.runs_dir) / task_slug(args.task) / f"seed{seed}"
    cfg = config_lib.to_dict(api.build_config(args.task, args.preset, args.overrides, logdir, args.steps, seed))
    if args.report and not (logdir / "config.yaml").is_file():
        raise UserError(f"--report: {logdir} holds no run; train it first or leave out seed {seed}")
    if args.rerun or not (logdir / "config.yaml").is_file():
        return logdir, cfg, "train"
    record = json.loads((logdir / RECORD).read_text()) if (logdir / RECORD).is_file() else {}
    # a run that ended, or that --max-minutes stopped (it wrote a checkpoint on the way out), can go on
    resumable = record.get("returncode") == 0 or record.get("timed_out")
    completed = resumable and list_checkpoints(logdir / "checkpoints")
    if is_finished(logdir, args.steps) or args.report:
        action = "reuse"
    else:
        action = "extend" if args.extend and completed else "train"
    if action != "train" and (diff := config_mismatch(logdir, cfg)):
        raise UserError(f"{logdir} holds a finished run with another config ({', '.join(diff[:5])}); "
                        "pass --rerun or another --runs-dir")
    return logdir, cfg, action


def describe(args: argparse.Namespace, cfg: dict[str, Any]) -> dict[str, Any]:
    """What was run, on what code and machine, and the command that reproduces it."""
    command = ["python", "benchmarks/learning.py", "--task", args.task, "--seeds", *map(str, args.seeds),
               "--steps", str(args.steps), "--threshold", f"{args.threshold:g}", "--stay-threshold",
               f"{args.stay_threshold:g}", "--max-minutes", f"{args.max_minutes:g}",
               *(["--nproc", str(args.nproc)] if args.nproc > 1 else []), *[f"--preset={p}" for p in args.preset],
               "--out", args.out, "--runs-dir", args.runs_dir,
               *(["--reference", args.reference] if args.reference else []), *(["--extend"] if args.extend else []),
               *(["--report"] if args.report else []), *args.overrides]
    run = cfg["run"]
    return {
        "config": {"task": args.task, "seeds": args.seeds, "steps": args.steps, "threshold": args.threshold,
                   "stay_threshold": args.stay_threshold, "max_minutes": args.max_minutes, "nproc": args.nproc,
                   "presets": args.preset, "presets_resolved": config_lib.compose_presets(args.preset, default_suite_preset(args.task)),
                   "overrides": args.overrides, "train_ratio": run["train_ratio"], "eval_every": run["eval_every"],
                   "eval_episodes": run["eval_episodes"],
                   "resolved": {k: v for k, v in cfg.items() if k not in ("seed", "logdir")}},
        "command": shlex.join(command),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "run_threads": run["threads"],
                    "device": run["device"],
                    "accelerator": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"},
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    plans = {seed: plan_seed(args, seed) for seed in args.seeds}  # config errors before any training
    seeds = []
    for seed, (logdir, cfg, action) in plans.items():
        record = json.loads((logdir / RECORD).read_text()) if (logdir / RECORD).is_file() else None
        if action == "reuse":
            print(f"[seed {seed}] reusing the finished run in {logdir}")
        elif action == "extend":
            print(f"[seed {seed}] extending the finished run in {logdir} to {args.steps:,} steps")
            record = train_seed(args, seed, logdir, before=record)
        else:
            if logdir.exists():
                print(f"[seed {seed}] deleting the {'old' if args.rerun else 'unfinished'} run in {logdir}")
                shutil.rmtree(logdir)
            record = train_seed(args, seed, logdir)
        seeds.append(analyse_seed(args, seed, logdir, record, cfg, action))
    result = {**describe(args, cfg), "seeds": seeds,
              "summary": summarise(args, seeds, cfg["env"]["action_repeat"])}
    ranks = [f"nproc{args.nproc}"] if args.nproc > 1 else []
    out, stem = Path(args.out), "_".join(["learning", task_slug(args.task), *args.preset, *ranks])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(out / f"{stem}.md", result)
    plotted = write_plot(out / f"{stem}.png", result)
    print(f"wrote {out / stem}.json, .md{', .png' if plotted else ''}\n")
    print((out / f"{stem}.md").read_text())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except UserError as error:
        print(f"learning.py: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("learning.py: interrupted; the unfinished seed starts afresh next time", file=sys.stderr)
        sys.exit(130)
