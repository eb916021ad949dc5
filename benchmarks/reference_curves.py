"""Published DreamerV3 learning curves (benchmarks/reference/dreamerv3_curves.json) and the
numbers we compare against.

The curves are data from the official repository (danijar/dreamerv3, folder `scores/`, commit
e3f02248, MIT licence), copied unchanged for the tasks our benchmarks run. Their x axis counts
environment frames (policy steps × action repeat).

The value of a curve "at N frames" follows ../shared/TARGETS.md: per seed, the mean of the points in
the last 30K frames up to and including N; then the mean and standard deviation over seeds. This
reproduces the published 478 ± 20 for DMC cartpole_swingup (proprio) at 100K frames.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

CURVES_FILE = Path(__file__).resolve().parent / "reference" / "dreamerv3_curves.json"
WINDOW = 30_000  # frames


def available() -> list[str]:
    return sorted(json.loads(CURVES_FILE.read_text())["curves"])


def load(key: str) -> list[dict]:
    """Runs [{seed, xs, ys}] of a curve such as "dmc_proprio/cartpole_swingup"."""
    curves = json.loads(CURVES_FILE.read_text())["curves"]
    if key not in curves:
        raise KeyError(f"no reference curve '{key}'; available: {', '.join(sorted(curves))}")
    return curves[key]


def window_mean(xs: list[float], ys: list[float], frames: float, window: float = WINDOW) -> float | None:
    """Mean of the ys whose x lies in (frames − window, frames]; None when there is none."""
    values = [y for x, y in zip(xs, ys) if frames - window < x <= frames]
    return statistics.fmean(values) if values else None


def value_at(runs: list[dict], frames: float, window: float = WINDOW) -> dict[str, float | int | None]:
    """{"mean", "std", "n"} over seeds of each seed's window mean at `frames`."""
    values = [v for r in runs if (v := window_mean(r["xs"], r["ys"], frames, window)) is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def band(runs: list[dict], until: float, points: int = 200, window: float = 10_000):
    """(frames, mean, std) over seeds at the curves' own x values up to `until` (at most `points`
    of them), each seed smoothed over the last `window` frames (10K: one eval point of the proprio
    curves), for plots."""
    grid = sorted({x for r in runs for x in r["xs"] if x <= until})
    grid = grid[:: max(1, len(grid) // points)]
    xs, means, stds = [], [], []
    for frames in grid:
        v = value_at(runs, frames, window)
        if v["mean"] is not None and v["n"] == len(runs):
            xs.append(frames), means.append(v["mean"]), stds.append(v["std"])
    return xs, means, stds
