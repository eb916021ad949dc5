"""`throughput.py --against DIR`: the update time of this checkout against another one (DIR, e.g.
a `git worktree` of the code before a change), timed alternately in fresh processes.

For each preset × obs × variant, `--rounds` rounds each run DIR's `benchmarks/throughput_worker.py`
and ours, in the order A B, then B A, ... (so a drift in the machine's load hits both sides
alike); per round, speed-up = their median seconds per update ÷ ours. Reported: both medians and
the speed-up as median [min – max] over the rounds.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path


def compare_rows(args, run_json, variant_overrides) -> list[dict]:
    """One row per preset × obs × variant; `run_json(cmd, threads, cwd=...)` runs one measurement."""
    other = Path(args.against).resolve()
    here = Path(__file__).resolve().parents[1]
    rows = []
    for preset in args.presets:
        for obs in args.obs:
            for variant in args.variants:
                runs = {"base": [], "ours": []}
                for r in range(args.rounds):
                    order = ("base", "ours") if r % 2 == 0 else ("ours", "base")
                    for side in order:
                        root = other if side == "base" else here
                        cmd = [sys.executable, str(root / "benchmarks" / "throughput_worker.py"), "updates",
                               "--preset", preset, "--obs", obs, "--device", args.device, "--threads",
                               str(args.threads), "-n", str(args.updates), "--warmup", str(args.warmup),
                               "--set", *variant_overrides(variant), *args.set]
                        result = run_json(cmd, args.threads, cwd=root)
                        runs[side].append(statistics.median(result["seconds_per_update"]))
                        print(f"[{side}] {preset} {obs} {variant} round {r + 1}/{args.rounds}: "
                              f"{runs[side][-1]:.3f} s/update", flush=True)
                speedups = [b / o for b, o in zip(runs["base"], runs["ours"])]
                rows.append({"preset": preset, "obs": obs, "variant": variant, "rounds": args.rounds,
                             "base_s_per_update": statistics.median(runs["base"]),
                             "ours_s_per_update": statistics.median(runs["ours"]),
                             "base_runs": runs["base"], "ours_runs": runs["ours"],
                             "speedup": statistics.median(speedups), "speedup_min": min(speedups),
                             "speedup_max": max(speedups)})
    return rows


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (with "AMX" when it has AMX tiles), or ''."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "")
    return f"{name} with AMX" if "amx_tile" in info else name


def compare_markdown(rows: list[dict], meta: dict, base_git: str) -> str:
    lines = [
        "# Update time against another checkout", "",
        f"Ours: Reverie `{meta['git']}`; base: `{base_git}` (`--against`). {meta['date']}; {meta['machine']}; "
        f"torch {meta['torch']}, {meta['threads']} threads, device {meta['device']}.", "",
        "One update: batch 16 × 64, imagination of 15 steps from all 1024 posterior states; median of the "
        "timed updates per process; processes alternate base/ours. Speed-up = base s/update ÷ ours, per round: "
        "median [min – max].", "",
        "| preset | obs | variant | base s/update | ours s/update | speed-up | rounds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['obs']} | {r['variant']} | {r['base_s_per_update']:.3f} | "
                     f"{r['ours_s_per_update']:.3f} | **{r['speedup']:.2f}×** [{r['speedup_min']:.2f} – "
                     f"{r['speedup_max']:.2f}] | {r['rounds']} |")
    lines += ["", "## Reproduce", "", "```", meta["command"], "```", ""]
    return "\n".join(lines)
