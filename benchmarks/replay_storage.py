"""Replay sampling time and resident memory for `replay.storage: memory` vs `disk` (issue 17).

Fills a replay with `--steps` steps of 64×64×3 uint8 images plus small keys (action (6,) float32,
reward, is_first/is_last/is_terminal), then times `sample_uniform` batches of B=16 windows of T=65
steps. Each storage runs in its own process so that its memory is its own. Disk storage is timed
twice: warm (the ring's pages in the page cache, right after filling) and cold (after msync, the
pages unmapped and dropped from the page cache: every window read from the file). Resident memory is
reported from /proc/self/status after filling: RssAnon (RAM the process needs) and RssFile
(file pages mapped, which the OS can drop at any time).

    python benchmarks/replay_storage.py --steps 200000 --repeats 30
writes benchmarks/results/replay_storage.json and .md.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
NUM_ENVS, B, T = 16, 16, 65


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def time_batches(replay, repeats: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        batch = replay.sample_uniform(B, rng)  # {key: (B, T, ...)}
        times.append((time.perf_counter() - start) * 1000)
        assert batch["image"].shape == (B, T, 64, 64, 3)
    return times


def drop_cache(replay) -> None:
    """msync the ring, unmap its pages from this process and drop them from the page cache."""
    replay.sync()
    for key in replay.disk_keys:
        array = replay._data[key]
        array._mmap.madvise(mmap.MADV_DONTNEED)
        fd = os.open(replay._ring.path(key), os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def worker(storage: str, steps: int, repeats: int) -> dict:
    from reverie.replay import Replay

    with tempfile.TemporaryDirectory(prefix="replay_storage_") as folder:
        replay = Replay(steps, B, T, NUM_ENVS, online=False, seed=0, storage=storage,
                        folder=Path(folder) / "ring" if storage == "disk" else None)
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (NUM_ENVS, 64, 64, 3), np.uint8)  # (N, 64, 64, 3)
        small = {"action": rng.standard_normal((NUM_ENVS, 6)).astype(np.float32),
                 "reward": np.zeros(NUM_ENVS, np.float32), "is_first": np.zeros(NUM_ENVS, bool),
                 "is_last": np.zeros(NUM_ENVS, bool), "is_terminal": np.zeros(NUM_ENVS, bool)}
        start = time.perf_counter()
        for t in range(steps // NUM_ENVS):
            image[:, 0, 0, 0] = t % 256
            replay.add({"image": image, **small})
        fill_s = time.perf_counter() - start
        result = {"storage": storage, "steps": len(replay), "fill_s": round(fill_s, 2),
                  "rss_anon_mib": status_kib("RssAnon") / 1024, "rss_file_mib": status_kib("RssFile") / 1024,
                  "describe": replay.describe(),
                  "warm_ms": time_batches(replay, repeats, 1)}
        if storage == "disk":
            drop_cache(replay)
            result["cold_ms"] = time_batches(replay, repeats, 2)
            result["disk_mib"] = replay._ring.resident_bytes() / 2**20
        return result


def summary(times: list[float]) -> str:
    return f"{statistics.median(times):.2f} ({min(times):.2f}–{max(times):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--worker", choices=["memory", "disk"])
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.repeats)))
        return
    runs = []
    for storage in ("memory", "disk"):
        out = subprocess.run([sys.executable, __file__, "--worker", storage, "--steps", str(args.steps),
                              "--repeats", str(args.repeats)], capture_output=True, text=True, check=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    cpu = cpu_name()
    report = {"cpu": cpu, "cores": os.cpu_count(), "batch": [B, T], "num_envs": NUM_ENVS,
              "note": "machine loaded by other benchmark runs", "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "replay_storage.json").write_text(json.dumps(report, indent=1) + "\n")
    rows = [f"Replay of {runs[0]['steps']:,} steps (64×64×3 uint8 images + small keys), {NUM_ENVS} envs; batch "
            f"B={B} × T={T}; {args.repeats} batches each. CPU: {cpu} ({os.cpu_count()} cores, loaded by other "
            "runs). Times in ms per batch: median (min–max).", "",
            "| storage | sample, warm | sample, cold page cache | RssAnon after fill | RssFile after fill | fill |",
            "|---|---|---|---|---|---|"]
    for run in runs:
        cold = summary(run["cold_ms"]) if "cold_ms" in run else "–"
        rows.append(f"| {run['storage']} | {summary(run['warm_ms'])} | {cold} | {run['rss_anon_mib']:,.0f} MiB "
                    f"| {run['rss_file_mib']:,.0f} MiB | {run['fill_s']:.1f} s |")
    rows += ["", *(f"- `{run['describe']}`" for run in runs), ""]
    (RESULTS / "replay_storage.md").write_text("\n".join(rows))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
