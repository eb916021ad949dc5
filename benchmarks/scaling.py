"""Scaling out: env steps/s and updates/s of one training job on 1 and N ranks, and with the envs
stepped inline or by an actor apart from the learner (`env.backend`).

Each setting runs `reverie train --nproc N env.backend=B` (torchrun, gloo on the CPU, NCCL on GPUs)
for the same env steps, config and global batch, and reads the job's own metric rows (`fps`,
`updates_per_s`, rank 0's clock) after the first row. The settings alternate over `--rounds` so the shared host's
drift falls on all of them alike; the table gives medians and the ratio to the first setting.

    python benchmarks/scaling.py --nproc 1 2 --threads 1 --steps 6000          # this CPU, one thread per rank
    python benchmarks/scaling.py --nproc 1 2 --threads 2 1 --steps 6000        # … and 1 rank × 2 threads
    python benchmarks/scaling.py --device cuda --nproc 1 8 --preset size12m size50m --steps 4000  # GPUs

    python benchmarks/scaling.py --env dmc:cartpole_swingup --preset debug --nproc 1 1 1 --threads 1 2 1 \
        --backend inline inline process --steps 3000 --tag actor env.image=true env.proprio=false  # an actor

`--threads` (torch threads per rank) and `--backend` pair with `--nproc` (one value: for all).
Writes scaling_<env>_<preset>[_<tag>].json and .md to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--preset", nargs="+", default=["classic"], help="one job per preset (the env's suite preset first)")
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2], help="ranks per job")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch threads per rank, paired with --nproc")
    parser.add_argument("--backend", nargs="+", default=["inline"], help="env.backend, paired with --nproc")
    parser.add_argument("--steps", type=int, default=6000, help="env steps of each job (the prefill included)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--tag", default="", help="appended to the output files' names")
    parser.add_argument("overrides", nargs="*", help="config overrides for every job")
    args = parser.parse_args(argv)
    for name in ("threads", "backend"):
        values = getattr(args, name)
        if len(values) == 1:
            setattr(args, name, values * len(args.nproc))
        elif len(values) != len(args.nproc):
            parser.error(f"--{name} takes one value or one per --nproc value")
    return args


def run_job(args, preset: str, nproc: int, threads: int, backend: str, folder: Path) -> dict:
    """One job; its medians over the metric rows after the first (the prefill and the start-up)."""
    logdir = folder / f"{preset}_n{nproc}_t{threads}_{backend}"
    shutil.rmtree(logdir, ignore_errors=True)
    command = [sys.executable, "-m", "reverie", "train", "--env", args.env, "--preset", preset, "--logdir", str(logdir),
               "--steps", str(args.steps), "--no-progress", "--nproc", str(nproc), f"run.threads={threads}",
               f"env.backend={backend}", f"run.device={args.device}", "run.eval_every=0", "run.eval_episodes=1", "run.report_every=0",
               "run.log_every=10", *args.overrides]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - start
    rows = [json.loads(line) for line in (logdir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "updates_per_s" in r][1:] or [r for r in rows if "updates_per_s" in r]
    shutil.rmtree(logdir, ignore_errors=True)
    return {"fps": statistics.median(r["fps"] for r in rows), "updates_per_s": statistics.median(r["updates_per_s"] for r in rows),
            "wall_s": wall, "rows": len(rows)}


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = list(zip(args.nproc, args.threads, args.backend))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="reverie_scaling_") as tmp:
        for preset in args.preset:
            samples = {s: [] for s in settings}
            for round_ in range(args.rounds):
                for nproc, threads, backend in settings:
                    result = run_job(args, preset, nproc, threads, backend, Path(tmp))
                    samples[(nproc, threads, backend)].append(result)
                    print(f"round {round_ + 1}: {preset} {nproc} rank(s) × {threads} thread(s), envs {backend}: "
                          f"{result['fps']:.1f} env steps/s, {result['updates_per_s']:.2f} updates/s", flush=True)
            write(out, args, preset, settings, samples)
    return 0


def write(out: Path, args, preset: str, settings, samples) -> None:
    base = None
    table = []
    for nproc, threads, backend in settings:
        runs = samples[(nproc, threads, backend)]
        fps = statistics.median(r["fps"] for r in runs)
        ups = statistics.median(r["updates_per_s"] for r in runs)
        base = base or (fps, ups)
        table.append({"nproc": nproc, "threads_per_rank": threads, "backend": backend, "fps": fps, "updates_per_s": ups,
                      "fps_ratio": fps / base[0], "updates_ratio": ups / base[1], "runs": runs})
    stem = "_".join(["scaling", args.env.replace(":", "_").replace("/", "_"), preset, *([args.tag] if args.tag else [])])
    command = " ".join(["python benchmarks/scaling.py", "--env", args.env, "--preset", preset, "--nproc",
                        *map(str, args.nproc), "--threads", *map(str, args.threads), "--backend", *args.backend,
                        *(["--tag", args.tag] if args.tag else []),
                        "--steps", str(args.steps),
                        "--rounds", str(args.rounds), "--device", args.device, *args.overrides])
    data = {"command": command, "machine": machine(), "env": args.env, "preset": preset, "steps": args.steps,
            "device": args.device, "settings": table,
            "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], check=False, cwd=REPO, capture_output=True, text=True).stdout.strip()}
    (out / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = [f"# Scaling out: {args.env}, preset {preset}, {args.steps:,} env steps per job", "",
             f"`{command}` on {data['machine']['cpu']} ({data['machine']['cores']} cores"
             + (f", {', '.join(data['machine']['gpus'])}" if args.device != "cpu" else "") + f"), code {data['git_commit'][:7]}.",
             f"Medians over {args.rounds} alternating round(s) of each job's metric rows after its first.", "",
             "| ranks | threads per rank | envs | env steps/s | updates/s | env steps/s vs first | updates/s vs first |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['nproc']} | {r['threads_per_rank']} | {r['backend']} | {r['fps']:.1f} | {r['updates_per_s']:.2f} | "
              f"{r['fps_ratio']:.2f}× | {r['updates_ratio']:.2f}× |" for r in table]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / stem}.json and .md")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
