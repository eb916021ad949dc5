"""A short training run of an agent family through the public API, then a resume past it."""

from __future__ import annotations

import numpy as np

import reverie


def train_then_resume(tmp_path, env: str, preset: str, steps: int, more: int, overrides: dict) -> None:
    """Train `steps` steps (updates happen, the final eval is finite), then resume to `more` steps."""
    logdir = tmp_path / "run"
    result = reverie.train(env, logdir=logdir, presets=[preset], steps=steps, overrides=overrides, progress=False)
    assert result["step"] == steps and result["updates"] > 0 and np.isfinite(result["eval"]["return_mean"])
    resumed = reverie.train(env, logdir=logdir, steps=more, progress=False)
    assert resumed["step"] == more and resumed["updates"] > result["updates"]
