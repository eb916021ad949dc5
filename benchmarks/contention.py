"""Training speed when a run shares the machine: alone, beside an identical run, and beside a
CPU-bound process, with two codebases' default thread settings measured in one run.

    python benchmarks/contention.py --baseline-src /tmp/reverie-before     # before vs after
    python benchmarks/contention.py --seconds 40 --presets debug           # a quick look

Each run is a real `python -m reverie train` on CartPole-v1 at train ratio 512 (one update per
policy step with the 16 × 32 batch) for `--seconds`, stopped with SIGINT; its updates/s is the
median of the `updates_per_s` metric rows (every 5 s) after `--warmup` seconds. Scenarios:

- `alone`: one run;
- `pair`: two identical runs started together (both are reported);
- `beside_hog`: one run beside `python -c "while True: pass"` (one core kept busy).

`--baseline-src DIR` is a checkout of the code before the change (e.g. a `git worktree`); its runs
import Reverie from there (PYTHONPATH), so "before" and "after" are timed on the same machine in
the same session, alternating scenario by scenario (and which goes first). Writes `contention.json` and `contention.md`
to `--out`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOG = [sys.executable, "-c", "while True: pass"]


def train_command(logdir: Path, preset: str) -> list[str]:
    return [sys.executable, "-m", "reverie", "train", "--env", "CartPole-v1", "--preset", preset,
            "--logdir", str(logdir), "--steps", "100000000", "--no-progress", "run.prefill=200",
            "run.train_ratio=512", "run.log_every=5", "run.eval_every=0", "run.eval_final=false",
            "run.report_every=0", "run.checkpoint_every=1000"]


def run_env(src: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    if src is not None:
        env["PYTHONPATH"] = str(src) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _default_sigint() -> None:
    """A shell's background job ignores SIGINT, and its children inherit that: give the run its Ctrl-C back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def measure(scenario: str, src: Path | None, preset: str, seconds: float, warmup: float) -> dict:
    """Start the scenario's processes, let them train for `seconds`, stop them, read the metrics."""
    runs = 2 if scenario == "pair" else 1
    with tempfile.TemporaryDirectory(prefix="contention_") as tmp:
        logdirs = [Path(tmp) / f"run{i}" for i in range(runs)]
        hog = subprocess.Popen(HOG) if scenario == "beside_hog" else None
        procs = [subprocess.Popen(train_command(d, preset), env=run_env(src), cwd=tmp, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, preexec_fn=_default_sigint) for d in logdirs]
        time.sleep(seconds)
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        errors = [proc.communicate(timeout=120)[1].decode()[-1500:] for proc in procs]
        if hog is not None:
            hog.kill()
            hog.wait()
        rates, threads = [], []
        for logdir, error in zip(logdirs, errors):
            rows = [json.loads(line) for line in (logdir / "metrics.jsonl").read_text().splitlines() if line]
            timed = [r for r in rows if "updates_per_s" in r]
            skip = max(1, round(warmup / 5))  # rows come every 5 s: those of the warm-up are left out
            kept = [r["updates_per_s"] for r in timed[skip:] if r.get("updates", 0) > 0]
            if not kept:
                raise RuntimeError(f"no timed rows for {scenario}:\n{error}")
            rates.append(statistics.median(kept))
            threads.append([r.get("threads") for r in timed[skip:] if "threads" in r])
    return {"scenario": scenario, "updates_per_s": rates, "threads": threads}


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "amx": "amx_bf16" in flags, "cores": len(os.sched_getaffinity(0)),
            "python": platform.python_version()}


def table(results: list[dict]) -> str:
    alone = {r["code"]: r["updates_per_s"][0] for r in results if r["scenario"] == "alone"}
    reference = alone.get("before", alone.get("after"))
    lines = ["| code | scenario | updates/s per run | × its own alone | × before alone | threads seen |",
             "|---|---|---|---|---|---|"]
    for r in results:
        rates = ", ".join(f"{x:.2f}" for x in r["updates_per_s"])
        own = ", ".join(f"{x / alone[r['code']]:.2f}" for x in r["updates_per_s"])
        ref = ", ".join(f"{x / reference:.2f}" for x in r["updates_per_s"])
        seen = "; ".join(",".join(str(t) for t in sorted(set(ts))) or "-" for ts in r["threads"])
        lines.append(f"| {r['code']} | {r['scenario']} | {rates} | {own} | {ref} | {seen} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="checkout of the code before the change (its runs are 'before')")
    parser.add_argument("--presets", nargs="+", default=["size1m"])
    parser.add_argument("--scenarios", nargs="+", default=["alone", "pair", "beside_hog"])
    parser.add_argument("--seconds", type=float, default=75.0, help="training time per scenario")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds of rows left out at the start")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--name", default="contention")
    args = parser.parse_args()
    codes = ([("before", args.baseline_src)] if args.baseline_src else []) + [("after", None)]
    results = []
    for preset in args.presets:
        for index, scenario in enumerate(args.scenarios):
            # before / after, then after / before for the next scenario: neither always goes first
            for code, src in codes if index % 2 == 0 else codes[::-1]:
                row = {"code": code, "preset": preset, **measure(scenario, src, preset, args.seconds, args.warmup)}
                print(json.dumps(row), flush=True)
                results.append(row)
    meta = {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
            "seconds": args.seconds, "warmup": args.warmup, "baseline_src": str(args.baseline_src or "")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": results}, indent=1))
    parts = [f"# Runs sharing the machine ({meta['date']})", "",
             f"Machine: {meta['machine']['cpu']} ({'AMX' if meta['machine']['amx'] else 'no AMX'}), "
             f"{meta['machine']['cores']} cores. Each run trains CartPole-v1 at train ratio 512 for "
             f"{args.seconds:g} s; updates/s is the median of its 5-second metric rows after "
             f"{args.warmup:g} s. `before`: {args.baseline_src or '-'}; `after`: this checkout.", ""]
    for preset in args.presets:
        parts += [f"## {preset}", "", table([r for r in results if r["preset"] == preset]), ""]
    (args.out / f"{args.name}.md").write_text("\n".join(parts))
    print("\n".join(parts))


if __name__ == "__main__":
    main()
