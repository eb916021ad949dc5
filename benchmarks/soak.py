"""Soak test of crash safety: a run SIGKILLed at K random moments and resumed each time must end
with the schedule of an uninterrupted run (same env steps, same gradient updates) and a learning
curve that does not collapse after a resume.

It runs `reverie train` as a subprocess (its own process group, so env workers die with it), kills
it with SIGKILL once its metrics reach each of K step targets drawn uniformly from the run (plus a
random 0–5 s, so the kill lands mid-update, mid-write or between), then starts the same command
again, which resumes. At the end it checks the replay folder (one contiguous chain of chunks from
step 0 to the last, every step once) and compares the final counters and the eval curve with an
uninterrupted run of the same config: by default seed 0 of the committed learning benchmark
(`benchmarks/results/learning_CartPole-v1.json`, made with the same command minus the kills).

    python benchmarks/soak.py                               # CartPole-v1, 50K steps, 5 kills
    python benchmarks/soak.py --kills 3 --steps 5000 --preset debug --reference none run.threads=1

Writes soak_<task>.json and .md to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from reverie.logging import read_metrics
from reverie.run.checkpoint import load_latest_checkpoint

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="CartPole-v1")
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--kill-seed", type=int, default=1, help="seeds the kill moments")
    parser.add_argument("--preset", action="append", default=[])
    parser.add_argument("--logdir", default="/tmp/reverie_soak")
    parser.add_argument("--reference", default="benchmarks/results/learning_CartPole-v1.json",
                        help="learning-benchmark JSON holding the uninterrupted run of this seed, or 'none'")
    parser.add_argument("--out", default="benchmarks/results")
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    args = parser.parse_args([a for a in argv if a not in overrides])
    args.overrides = overrides
    return args


def newest_metrics_step(logdir: Path) -> int:
    rows = read_metrics(logdir / "metrics.jsonl") if (logdir / "metrics.jsonl").exists() else []
    return max((row["step"] for row in rows), default=0)


def replay_chain(logdir: Path) -> dict[str, Any]:
    """Spans of the chunk files, whether they chain from 0, and whether each step is stored once."""
    spans = sorted(tuple(int(x) for x in p.stem.split("_")[1:]) for p in (logdir / "replay").glob("chunk_*.npz"))
    chained = bool(spans) and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    return {"first": spans[0][0] if spans else None, "end": spans[-1][1] if spans else 0,
            "files": len(spans), "contiguous": chained}


def evals(logdir: Path) -> list[tuple[int, float]]:
    return [(row["step"], row["eval/return_mean"]) for row in read_metrics(logdir / "metrics.jsonl")
            if "eval/return_mean" in row]


def train_returns(logdir: Path, start: int, stop: int) -> float | None:
    values = [row["episode/return"] for row in read_metrics(logdir / "metrics.jsonl")
              if start <= row["step"] < stop and row.get("episode/return") is not None]
    return float(np.mean(values)) if values else None


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logdir = Path(args.logdir)
    if logdir.exists():
        raise SystemExit(f"{logdir} exists; remove it or pass another --logdir")
    command = [sys.executable, "-m", "reverie", "train", "--env", args.task, "--logdir", str(logdir),
               "--seed", str(args.seed), "--steps", str(args.steps), "--no-progress",
               *[f"--preset={p}" for p in args.preset], *args.overrides]
    rng = random.Random(args.kill_seed)
    targets = sorted(rng.uniform(0.05, 0.95) * args.steps for _ in range(args.kills))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    kills: list[dict[str, Any]] = []
    start = time.monotonic()
    logdir.mkdir(parents=True)
    log = open(logdir.parent / f"{logdir.name}.stdout.log", "w", encoding="utf-8")
    for target in [*targets, None]:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        if target is None:
            code = proc.wait()
            if code != 0:
                raise SystemExit(f"the final run exited with {code}; see {log.name}")
            break
        while proc.poll() is None and newest_metrics_step(logdir) < target:
            time.sleep(0.5)
        time.sleep(rng.uniform(0.0, 5.0))
        if proc.poll() is not None:
            raise SystemExit(f"the run ended (code {proc.returncode}) before kill {len(kills) + 1}; see {log.name}")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        found = load_latest_checkpoint(logdir / "checkpoints")
        kills.append({"target_step": int(target), "metrics_step_at_kill": newest_metrics_step(logdir),
                      "checkpoint_step": found[1]["counters"]["step"] if found else 0,
                      "replay_end": replay_chain(logdir)["end"], "wall_s": round(time.monotonic() - start, 1)})
        print(f"kill {len(kills)}: {kills[-1]}", flush=True)
    log.close()
    _, payload = load_latest_checkpoint(logdir / "checkpoints")
    chain = replay_chain(logdir)
    curve = evals(logdir)
    for kill in kills:  # training-episode return just before each kill and just after its resume
        resumed_at = max(kill["checkpoint_step"], kill["replay_end"])
        kill["episode_return_before"] = train_returns(logdir, resumed_at - 2000, resumed_at)
        kill["episode_return_after"] = train_returns(logdir, resumed_at, resumed_at + 2000)
    result: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/soak.py", *argv]),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                     text=True).stdout.strip(),
        "kills": kills, "final_step": payload["counters"]["step"], "updates": payload["counters"]["updates"],
        "replay": chain, "eval_curve": curve, "wall_s": round(time.monotonic() - start, 1),
    }
    if args.reference != "none":
        reference = json.loads(Path(args.reference).read_text())
        seed = next(s for s in reference["seeds"] if s["seed"] == args.seed)
        result["reference"] = {"file": args.reference, "final_step": seed["final_step"], "updates": seed["updates"],
                               "eval_curve": [(step, mean) for step, mean, *_ in seed["eval_curve"]]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"soak_{args.task.replace(':', '_')}"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(result: dict[str, Any]) -> str:
    ref = result.get("reference")
    lines = [f"# Soak: {len(result['kills'])} SIGKILLs and resumes", "", f"`{result['command']}` "
             f"(commit {result['git_commit'][:7]}, {result['wall_s'] / 60:.1f} min)", "",
             "| kill | at step (metrics) | newest checkpoint | replay on disk | resumed at | "
             "train return 2K steps before → after |", "|---|---|---|---|---|---|"]
    for i, k in enumerate(result["kills"], 1):
        fmt = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
        lines.append(f"| {i} | {k['metrics_step_at_kill']:,} | {k['checkpoint_step']:,} | {k['replay_end']:,} | "
                     f"{max(k['checkpoint_step'], k['replay_end']):,} | {fmt(k['episode_return_before'])} → "
                     f"{fmt(k['episode_return_after'])} |")
    chain = result["replay"]
    lines += ["", f"Final: {result['final_step']:,} env steps, {result['updates']:,} updates"
              + (f" (uninterrupted run: {ref['final_step']:,} steps, {ref['updates']:,} updates)" if ref else "")
              + f"; replay: {chain['files']} chunk files, contiguous {chain['contiguous']}, "
              f"steps {chain['first']}–{chain['end']:,}.", "", "| step | eval return (soak) |"
              + (" uninterrupted |" if ref else ""), "|---|---|" + ("---|" if ref else "")]
    reference = dict(ref["eval_curve"]) if ref else {}
    for step, value in result["eval_curve"]:
        lines.append(f"| {step:,} | {value:.1f} |" + (f" {reference.get(step, float('nan')):.1f} |" if ref else ""))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
