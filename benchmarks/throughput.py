"""Training throughput of Reverie, with a peer (SheepRL's DreamerV3) timed in the same run.

    python benchmarks/throughput.py                       # everything (about an hour on 2 cores)
    python benchmarks/throughput.py --presets size1m --obs vector --no-peer --no-e2e
    python benchmarks/throughput.py --only-peer --peer-rounds 5
    python benchmarks/throughput.py --against ../reverie-before --presets xs size1m --obs vector

Every number comes from a fresh process (`benchmarks/throughput_worker.py`, or SheepRL's own
timer in its own venv), so no run inherits another's caches, threads or allocator state:

- updates/s: `Agent.train_step` on one fixed 16 × 64 replay batch, imagining 15 steps from all
  1024 posterior states (the official per-update work), median of the timed updates;
- policy steps/s: `Agent.act` for `--envs` envs at once;
- each row under a variant of our settings: `float32` or `bfloat16` autocast, optionally
  `+compile` (`run.compile`; its compilation is in the first update, reported apart);
- end-to-end env steps/s: the real training loop (CartPole-v1, or Atari Pong for 64×64 images) at
  train ratio `--e2e-ratio`, after prefill;
- FLOPs per update from `torch.utils.flop_counter` (matmuls and convolutions, forward and
  backward) and utilisation = achieved FLOP/s ÷ the measured 2048³ matmul rate of the precision
  in use;
- the peer comparison at SheepRL's `dreamer_v3_XS` dimensions: ours and SheepRL's update timed
  alternately (A B A B …), `--peer-rounds` rounds; ratio = SheepRL's seconds per update ÷ ours, per
  round, reported as the median with its range.

With `--against DIR`, only our update time against the checkout in DIR, alternately
(`throughput_compare.py`), written as `throughput_against.json/.md`.

Writes `throughput.json` (a list of rows) and `throughput.md` to `--out`.
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
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from peers.sheeprl_env import PEER_NAME, ensure_sheeprl_venv  # noqa: E402

WORKER = HERE / "throughput_worker.py"
PEER_TIMER = HERE / "peers" / "sheeprl_update_timer.py"


# glibc's environment form of what `run.retain_memory` sets with mallopt (reverie/run/host_memory.py):
# no per-request mmap, never trim the heap. For the peer with --peer-retain-memory.
RETAIN_MEMORY_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**64 - 1)}


def run_json(cmd: list[str], threads: int, extra_env: dict | None = None, cwd: Path = ROOT) -> dict:
    """Run a measurement process with `threads` OpenMP threads; return its last JSON line."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), **(extra_env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"measurement failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def ours(what: str, preset: str, obs: str, args, extra: list[str] = ()) -> dict:
    cmd = [sys.executable, str(WORKER), what, "--preset", preset, "--obs", obs, "--device", args.device,
           "--threads", str(args.threads)]
    sets = list(args.set) + list(extra)
    if sets:
        cmd += ["--set", *sets]
    return run_json(cmd + list(extra_args(what, args)), args.threads)


def extra_args(what: str, args) -> list[str]:
    if what == "updates":
        return ["-n", str(args.updates), "--warmup", str(args.warmup)]
    if what == "act":
        return ["-n", "50", "--warmup", "5", "--envs", str(args.envs)]
    if what == "e2e":
        return ["--ratio", str(args.e2e_ratio), "--steps", str(args.e2e_steps), "--envs", "1"]
    return []


def median(xs):
    return statistics.median(xs) if xs else None


def preset_rows(args, peak: dict) -> list[dict]:
    rows = []
    for preset in args.presets:
        for obs in args.obs:
            for variant in args.variants:
                extra = variant_overrides(variant)
                print(f"[ours] {preset} {obs} {variant}", flush=True)
                upd = ours("updates", preset, obs, args, extra)
                act = ours("act", preset, obs, args, extra)
                e2e = ours("e2e", preset, obs, args, extra) if args.e2e and preset in args.e2e_presets else None
                rows.append(make_row(preset, obs, args, upd, peak, act=act, e2e=e2e))
                print(f"   {rows[-1]['ours_s_per_update']:.3f} s/update", flush=True)
    return rows


def make_row(preset, obs, args, upd, peak, act=None, e2e=None, peer=None) -> dict:
    s = median(upd["seconds_per_update"])
    precision = upd["precision"]
    compiled = upd["overrides"].get("run.compile") == "true"
    peak_gflops = peak.get(f"peak_gflops_{precision}")
    achieved = upd["flops_per_update"] / s / 1e9
    row = {
        "preset": preset, "obs": obs, "device": args.device_name, "threads": upd["threads"],
        "precision": precision, "compile": compiled, "variant": precision + ("+compile" if compiled else ""),
        "ours_s_per_update": s, "ours_updates_per_s": 1.0 / s,
        "ours_first_update_s": upd["first_update_s"], "params": upd["params"],
        "flops_per_update": upd["flops_per_update"], "achieved_gflops": achieved,
        "peak_gflops": peak_gflops, "utilisation": achieved / peak_gflops if peak_gflops else None,
        "policy_steps_per_s": act["policy_steps_per_s"] if act else None, "act_envs": act["envs"] if act else None,
        "e2e_env_steps_per_s": e2e["env_steps_per_s"] if e2e else None,
        "e2e_train_ratio": e2e["train_ratio"] if e2e else None,
        "peer": None, "peer_updates_per_s": None, "ratio": None,
    }
    if peer:
        row.update(peer)
    return row


PEER_PRECISION = {"float32": "32-true", "bfloat16": "bf16-mixed"}  # ours → Lightning's name


def variant_overrides(variant: str) -> list[str]:
    """'bfloat16+compile' → ['run.precision=bfloat16', 'run.compile=true']."""
    precision, *flags = variant.split("+")
    if precision not in PEER_PRECISION or any(f != "compile" for f in flags):
        raise SystemExit(f"unknown variant '{variant}': use float32 or bfloat16, optionally with +compile")
    return [f"run.precision={precision}"] + (["run.compile=true"] if flags else [])


def peer_rows(args, peak: dict) -> list[dict]:
    python = ensure_sheeprl_venv(Path(args.peer_venv))
    rows = []
    for obs, spec in [(o, v) for o in args.obs for v in args.peer_variants]:
        variant, _, peer_precision = spec.partition("@")  # "bfloat16+compile@32-true": the peer's own setting
        precision = variant.split("+")[0]
        peer_precision = peer_precision or PEER_PRECISION.get(precision)
        if peer_precision not in PEER_PRECISION.values():
            raise SystemExit(f"unknown peer precision in '{spec}': use one of {sorted(PEER_PRECISION.values())}")
        ours_runs, peer_runs = [], []
        for r in range(args.peer_rounds):
            tag = f"[peer] xs {obs} {variant} / {peer_precision} round {r + 1}/{args.peer_rounds}"
            print(f"{tag}: ours", flush=True)
            ours_runs.append(ours("updates", "xs", obs, args, variant_overrides(variant)))
            print(f"{tag}: {PEER_NAME}", flush=True)
            peer_runs.append(run_json([str(python), str(PEER_TIMER), "--obs", obs, "--updates", str(args.updates),
                                       "--warmup", str(args.warmup), "--precision", peer_precision],
                                      args.threads, RETAIN_MEMORY_ENV if args.peer_retain_memory else None))
            print(f"   ours {median(ours_runs[-1]['seconds_per_update']):.3f} s, "
                  f"peer {median(peer_runs[-1]['seconds_per_update']):.3f} s", flush=True)
        ours_s = [median(o["seconds_per_update"]) for o in ours_runs]
        peer_s = [median(p["seconds_per_update"]) for p in peer_runs]
        ratios = [p / o for p, o in zip(peer_s, ours_s)]
        merged = {**ours_runs[0], "seconds_per_update": [x for o in ours_runs for x in o["seconds_per_update"]]}
        peer = {"peer": PEER_NAME, "peer_precision": peer_precision,
                "peer_retain_memory": args.peer_retain_memory,
                "peer_flops_per_update": peer_runs[0].get("flops_per_update"),
                "peer_s_per_update": median(peer_s), "peer_updates_per_s": 1.0 / median(peer_s),
                "ratio": median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                "rounds": args.peer_rounds, "ours_round_s": ours_s, "peer_round_s": peer_s,
                "peer_params": peer_runs[0].get("params"), "peer_dims": peer_runs[0].get("dims")}
        row = make_row("xs", obs, args, merged, peak, peer=peer)
        row["ours_s_per_update"] = median(ours_s)
        row["ours_updates_per_s"] = 1.0 / median(ours_s)
        rows.append(row)
    return rows


def fmt(value, spec):
    return "—" if value is None else format(value, spec)


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Training throughput", "",
        f"Reverie `{meta['git']}`, {meta['date']}; {meta['machine']}; torch {meta['torch']}, "
        f"{meta['threads']} threads, device {meta['device']}.",
        f"Matmul peak (2048³, median of 10): {fmt(meta['peak'].get('peak_gflops_float32'), '.1f')} GFLOP/s float32, "
        f"{fmt(meta['peak'].get('peak_gflops_bfloat16'), '.1f')} GFLOP/s bfloat16.", "",
        "One update: batch 16 × 64, imagination of 15 steps from all 1024 posterior states. "
        "FLOPs from `torch.utils.flop_counter` (matmuls and convolutions).", "",
    ]
    presets = [r for r in rows if not r["peer"]]
    if presets:
        lines += ["| preset | obs | variant | s/update | updates/s | GFLOP/update | GFLOP/s | utilisation | "
                  "policy steps/s | env steps/s (e2e) | first update s | params |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in presets:
        lines.append(
            f"| {r['preset']} | {r['obs']} | {r['variant']} | {r['ours_s_per_update']:.3f} | "
            f"{r['ours_updates_per_s']:.2f} | {r['flops_per_update'] / 1e9:.1f} | {r['achieved_gflops']:.1f} | "
            f"{fmt(r['utilisation'], '.1%')} | {fmt(r['policy_steps_per_s'], ',.0f')} "
            f"({r['act_envs']} envs) | {fmt(r['e2e_env_steps_per_s'], ',.1f')} | {r['ours_first_update_s']:.1f} | "
            f"{r['params']:,} |")
    peers = [r for r in rows if r["peer"]]
    if peers:
        lines += [
            "", f"## Against {peers[0]['peer']} at its `dreamer_v3_XS` dimensions", "",
            "Timed alternately in fresh processes (ours, peer, ours, peer, …); ratio = peer's seconds per "
            "update ÷ ours, per round: median [min – max]. Ours keeps freed host memory (`run.retain_memory`); "
            + ("the peer ran with the same glibc settings (`--peer-retain-memory`)."
               if peers[0].get("peer_retain_memory") else "the peer ran with glibc's defaults."), "",
            "| obs | precision (ours / peer) | ours s/update | peer s/update | ratio | rounds | "
            "GFLOP/update (ours / peer) | params (ours / peer) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in peers:
            pp = sum((r.get("peer_params") or {}).values())
            pf = r.get("peer_flops_per_update")
            lines.append(
                f"| {r['obs']} | {r['variant']} / {r['peer_precision']} | {r['ours_s_per_update']:.3f} | "
                f"{r['peer_s_per_update']:.3f} | **{r['ratio']:.2f}×** [{r['ratio_min']:.2f} – {r['ratio_max']:.2f}] | "
                f"{r['rounds']} | {r['flops_per_update'] / 1e9:.0f} / {fmt(pf and pf / 1e9, '.0f')} | "
                f"{r['params']:,} / {pp:,} |")
        for obs in sorted({r["obs"] for r in peers}):
            default = next((r for r in peers if r["obs"] == obs and r["peer_precision"] == "32-true"), None)
            for r in peers:
                measured = any(o["obs"] == obs and o["variant"] == r["variant"] and o["peer_precision"] == "32-true"
                               for o in peers)  # timed alternately against the peer's default already
                if default and r["obs"] == obs and r is not default and not measured:
                    lines.append(
                        f"\n{obs}: ours with {r['variant']} against {r['peer']} at its default precision (32-true): "
                        f"{default['peer_s_per_update'] / r['ours_s_per_update']:.2f}× (ratio of the medians of "
                        "the two rows above, measured in different rounds).")
    lines += ["", "## Reproduce", "", "```", meta["command"], "```", ""]
    return "\n".join(lines)


def git_commit(root: Path = ROOT) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, cwd=root)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=root).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["debug", "size1m", "size12m"])
    parser.add_argument("--obs", nargs="+", default=["vector", "image"], choices=["vector", "image"])
    parser.add_argument("--variants", nargs="+", default=["float32", "bfloat16+compile"],
                        help="our settings per preset row: float32 or bfloat16, optionally +compile")
    parser.add_argument("--peer-variants", nargs="+", default=["float32", "bfloat16+compile"],
                        help="our settings against the peer; its precision follows ours (32-true / bf16-mixed) "
                             "unless given after @, e.g. bfloat16+compile@32-true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--updates", type=int, default=5, help="timed updates per process")
    parser.add_argument("--warmup", type=int, default=2, help="untimed updates per process after the first")
    parser.add_argument("--envs", type=int, default=8, help="envs for the policy-step measurement")
    parser.add_argument("--e2e-ratio", type=float, default=64.0)
    parser.add_argument("--e2e-steps", type=int, default=512)
    parser.add_argument("--e2e-presets", nargs="+", default=["debug", "size1m"])
    parser.add_argument("--no-e2e", dest="e2e", action="store_false")
    parser.add_argument("--peer-rounds", type=int, default=3)
    parser.add_argument("--peer-venv", default=str(Path.home() / ".cache" / "reverie-bench" / "sheeprl-venv"))
    parser.add_argument("--no-peer", dest="peer", action="store_false")
    parser.add_argument("--only-peer", action="store_true")
    parser.add_argument("--peer-retain-memory", action="store_true",
                        help="run the peer with glibc set as our run.retain_memory sets it (environment variables)")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides for our runs, key=value")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--name", default=None, help="file stem of the results (default throughput[_<device>])")
    parser.add_argument("--against", default=None, metavar="DIR",
                        help="time our updates against the checkout in DIR, alternately (throughput_compare.py)")
    parser.add_argument("--rounds", type=int, default=3, help="--against: rounds per row")
    args = parser.parse_args(argv)
    if args.against:
        return against(args, argv)

    peak = run_json([sys.executable, str(WORKER), "peak", "--device", args.device, "--threads", str(args.threads)],
                    args.threads)
    args.device_name = args.device if args.device != "cpu" else f"cpu ({platform.processor() or 'x86_64'}, " \
                                                                 f"{os.cpu_count()} cores)"
    rows = [] if args.only_peer else preset_rows(args, peak)
    if args.peer:
        rows += peer_rows(args, peak)
    import torch

    meta = {"git": git_commit(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.platform()}, {os.cpu_count()} CPUs", "torch": torch.__version__,
            "threads": args.threads, "device": args.device, "peak": peak,
            "command": "python benchmarks/throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.name or ("throughput" if args.device == "cpu" else f"throughput_{args.device.replace(':', '')}")
    context = {k: meta[k] for k in ("git", "date", "machine", "torch")}
    (out / f"{stem}.json").write_text(json.dumps([{**row, **context} for row in rows], indent=1))
    (out / f"{stem}.md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))


def against(args, argv) -> None:
    from throughput_compare import compare_markdown, compare_rows, cpu_name
    import torch

    rows = compare_rows(args, run_json, variant_overrides)
    meta = {"git": git_commit(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.platform()}, {cpu_name() or platform.machine()}, {os.cpu_count()} CPUs",
            "torch": torch.__version__, "threads": args.threads, "device": args.device,
            "command": "python benchmarks/throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    base = git_commit(Path(args.against))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.name or "throughput_against"
    (out / f"{stem}.json").write_text(json.dumps({"meta": {**meta, "base": base}, "rows": rows}, indent=1))
    (out / f"{stem}.md").write_text(compare_markdown(rows, meta, base))
    print(compare_markdown(rows, meta, base))


if __name__ == "__main__":
    main()
