"""What each speed technique of reverie/kernels saves: the update with every switch on against the
update with one switched off (`kernels.X=false`), the settings taking turns update by update in one
process (throughput_worker.py `ablate`), so that the machine's drift hits each setting alike.

    python benchmarks/kernels_ablation.py                      # benchmarks/results/kernels_ablation.{json,md}
    python benchmarks/kernels_ablation.py --rows xs:vector:float32 xs:image:float32:inverse_cdf,few_rows_float32

A row is preset:obs:variant, optionally :kernel,kernel (default: --kernels); `a+b` names a setting
with both switched off together. Per row, one process
builds the agent and runs --cycles cycles, each timing one update per setting (all on, then each
kernel off, the order rotating from cycle to cycle) after one warm-up cycle. Saving = 1 − on ÷ off
per cycle, reported as the median [min – max]. Issue 16 keeps a technique where it saves at least
5% of an update at the XS or size1m dimensions.
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


def measure(preset, obs, variant, names, args) -> dict[str, list[float]]:
    cmd = [sys.executable, str(HERE / "throughput_worker.py"), "ablate", "--preset", preset, "--obs", obs,
           "--threads", str(args.threads), "-n", str(args.cycles), "--warmup", "1", "--kernels", *names,
           "--set", *VARIANTS[variant]]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])["seconds"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, help="preset:obs:variant")
    parser.add_argument("--kernels", nargs="+", default=list(kernels.NAMES),
                        help="kernels to switch off one at a time; a+b switches both off together")
    parser.add_argument("--cycles", type=int, default=8, help="timed cycles (one update per setting each)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--name", default="kernels_ablation", help="file name of the results, without suffix")
    args = parser.parse_args(argv)
    results = []
    for row in args.rows:
        preset, obs, variant, *chosen = row.split(":")
        names = chosen[0].split(",") if chosen else args.kernels
        unknown = {k for name in names for k in name.split("+")} - set(kernels.NAMES)
        if unknown:
            parser.error(f"row {row}: unknown kernels {sorted(unknown)}; the kernels are {', '.join(kernels.NAMES)}")
        times = measure(preset, obs, variant, names, args)
        for name in names:
            savings = [1 - on / off for on, off in zip(times["all"], times[name])]
            results.append({"row": f"{preset}:{obs}:{variant}", "kernel": name,
                            "on_s": statistics.median(times["all"]), "off_s": statistics.median(times[name]),
                            "saving": statistics.median(savings), "saving_min": min(savings),
                            "saving_max": max(savings), "cycles": args.cycles,
                            "on_runs": times["all"], "off_runs": times[name]})
            print(f"{results[-1]['row']} {name}: saving {results[-1]['saving']:+.1%}", flush=True)
    import torch

    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.platform()}, {cpu_name() or platform.machine()}, {os.cpu_count()} CPUs",
            "torch": torch.__version__, "threads": args.threads,
            "command": "python benchmarks/kernels_ablation.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    lines = ["# What each kernel saves", "",
             f"{meta['date']}; {meta['machine']}; torch {meta['torch']}, {args.threads} threads. One update: "
             "batch 16 × 64, imagination of 15 steps from all 1024 posterior states. The settings take turns update "
             "by update in one process per row. Saving = 1 − (all on) ÷ (this one off), per cycle: median "
             "[min – max].", "",
             "| row | kernel | all on s/update | this one off s/update | saving | cycles |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['row']} | `{r['kernel']}` | {r['on_s']:.3f} | {r['off_s']:.3f} | "
                     f"**{r['saving']:+.1%}** [{r['saving_min']:+.1%} – {r['saving_max']:+.1%}] | {r['cycles']} |")
    lines += ["", "## Reproduce", "", "```", meta["command"], "```", ""]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": results}, indent=1))
    (out / f"{args.name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
