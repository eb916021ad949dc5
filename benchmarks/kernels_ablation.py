"""What each speed technique of reverie/kernels saves: the update with every switch on against the
update with one switched off (`kernels.X=false`), timed alternately in fresh processes.

    python benchmarks/kernels_ablation.py                      # benchmarks/results/kernels_ablation.{json,md}
    python benchmarks/kernels_ablation.py --rows xs:vector:float32 --kernels posterior_loop --rounds 5

Per row (preset:obs:variant) and round: one process with every kernel on, then one per kernel
switched off (the order reversed every other round); saving = 1 − on ÷ off per round, reported as
the median [min – max]. Issue 16 keeps a technique where it saves at least 5% of an update at the
XS or size1m dimensions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from reverie import kernels  # noqa: E402
from throughput_compare import cpu_name  # noqa: E402

VARIANTS = {"float32": ["run.precision=float32"],
            "bfloat16+compile": ["run.precision=bfloat16", "run.compile=true"]}
DEFAULT_ROWS = ["size1m:vector:float32", "xs:vector:float32", "xs:image:float32"]


def measure(preset, obs, variant, off, args) -> float:
    sets = VARIANTS[variant] + ([f"kernels.{off}=false"] if off else [])
    cmd = [sys.executable, str(HERE / "throughput_worker.py"), "updates", "--preset", preset, "--obs", obs,
           "--threads", str(args.threads), "-n", str(args.updates), "--warmup", str(args.warmup), "--set", *sets]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return statistics.median(json.loads(lines[-1])["seconds_per_update"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, help="preset:obs:variant")
    parser.add_argument("--kernels", nargs="+", default=list(kernels.NAMES), choices=kernels.NAMES)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--updates", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    results = []
    for row in args.rows:
        preset, obs, variant = row.split(":")
        times: dict[str | None, list[float]] = {None: [], **{k: [] for k in args.kernels}}
        for r in range(args.rounds):
            order = [None, *args.kernels] if r % 2 == 0 else [*args.kernels[::-1], None]
            for off in order:
                times[off].append(measure(preset, obs, variant, off, args))
                print(f"{row} round {r + 1}: {'all on' if off is None else off + ' off'} "
                      f"{times[off][-1]:.3f} s", flush=True)
        for name in args.kernels:
            savings = [1 - on / off for on, off in zip(times[None], times[name])]
            results.append({"row": row, "kernel": name, "on_s": statistics.median(times[None]),
                            "off_s": statistics.median(times[name]), "saving": statistics.median(savings),
                            "saving_min": min(savings), "saving_max": max(savings), "rounds": args.rounds,
                            "on_runs": times[None], "off_runs": times[name]})
    import torch

    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.platform()}, {cpu_name() or platform.machine()}, {os.cpu_count()} CPUs",
            "torch": torch.__version__, "threads": args.threads,
            "command": "python benchmarks/kernels_ablation.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    lines = ["# What each kernel saves", "",
             f"{meta['date']}; {meta['machine']}; torch {meta['torch']}, {args.threads} threads. One update: "
             "batch 16 × 64, imagination of 15 steps from all 1024 posterior states. Saving = 1 − (all on) ÷ "
             "(this one off), per round: median [min – max].", "",
             "| row | kernel | all on s/update | this one off s/update | saving | rounds |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['row']} | `{r['kernel']}` | {r['on_s']:.3f} | {r['off_s']:.3f} | "
                     f"**{r['saving']:+.1%}** [{r['saving_min']:+.1%} – {r['saving_max']:+.1%}] | {r['rounds']} |")
    lines += ["", "## Reproduce", "", "```", meta["command"], "```", ""]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernels_ablation.json").write_text(json.dumps({"meta": meta, "rows": results}, indent=1))
    (out / "kernels_ablation.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
