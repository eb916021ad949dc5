"""Every family preset trains from the CLI and from the Python API, on vector and image
observations, with the debug size (the planner with fewer candidates, to stay fast)."""

from __future__ import annotations

import numpy as np
import pytest
from toy_envs import DictObsEnv

import reverie
from reverie import cli
from reverie import config as C
from reverie.logging import read_metrics

PRESETS = ["dreamerv3_2023", "dreamerv2", "dreamerv1", "planet"]
FAST = {"run.prefill": 60, "run.train_every": 20, "run.train_ratio": 32, "run.eval_every": 0, "run.report_every": 0,
        "run.log_every": 0, "behavior.planner.candidates": 32, "behavior.planner.top_k": 4,
        "behavior.planner.iterations": 2}
SMALL_CNN = {"model.encoder.mults": [2, 2], "model.decoder.mults": [2, 2]}


def trained_rows(logdir) -> list[dict]:
    return [r for r in read_metrics(logdir / "metrics.jsonl") if "loss/total" in r]


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_from_the_python_api_on_images(preset, tmp_path):
    result = reverie.train(lambda: DictObsEnv(), logdir=tmp_path / "run", presets=[preset, "debug"], steps=120,
                           overrides={**FAST, **SMALL_CNN}, progress=False)
    assert result["step"] == 120 and result["updates"] > 0
    rows = trained_rows(tmp_path / "run")
    assert rows and all(np.isfinite(r["loss/total"]) for r in rows)
    assert "loss/policy" in rows[-1] if preset != "planet" else "loss/policy" not in rows[-1]


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_from_the_cli_on_vectors_and_resumes(preset, tmp_path, capsys):
    logdir = tmp_path / "run"
    args = ["train", "--env", "Pendulum-v1", "--preset", preset, "--preset", "debug", "--logdir", str(logdir),
            "--no-progress", *(f"{k}={v}" for k, v in FAST.items())]
    assert cli.main([*args, "--steps", "100"]) == 0
    assert cli.main(["train", "--logdir", str(logdir), "--steps", "140", "--no-progress"]) == 0
    rows = trained_rows(logdir)
    assert rows and rows[-1]["step"] == 140
    saved = C.load(logdir / "config.yaml")
    assert saved.behavior.kind == ("planner" if preset == "planet" else "actor_critic")


def test_presets_are_listed_and_documented_in_the_readme():
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for name in [*PRESETS, "small2023", "medium2023", "large2023", "xlarge2023"]:
        assert name in C.available_presets()
        assert f"`{name}`" in readme, name


@pytest.mark.parametrize("suite, envs, prefill", [("dmc_proprio", 16, 0), ("dmc_vision", 16, 0), ("atari", 16, 0),
                                                  ("atari100k", 1, 0), ("crafter", 1, 0), ("classic", 1, 1000)])
def test_suites_step_the_official_env_count_and_the_policy_acts_from_step_0(suite, envs, prefill):
    """danijar/dreamerv3 configs.yaml: run.envs 16, atari100k and crafter 1; no random prefill
    (classic keeps the 1000 its CartPole benchmark was measured with)."""
    cfg = C.make_config(C.compose_presets(["dreamerv3", suite]))
    assert (cfg.env.num_envs, cfg.run.prefill) == (envs, prefill)
    if suite != "classic":  # which sets its own
        assert C.make_config(C.compose_presets(["dreamerv2", suite])).run.prefill == 5000  # dreamerv2's dmc value


def test_without_prefill_training_starts_once_replay_holds_one_batch(tmp_path):
    overrides = {**FAST, "run.prefill": 0, "run.train_every": 1, "run.train_ratio": 64}  # 1 update per step
    short = reverie.train("CartPole-v1", logdir=tmp_path / "a", presets=["debug"], steps=63, overrides=overrides,
                          progress=False)
    assert short["updates"] == 0  # 63 steps < batch 4 × 16
    longer = reverie.train("CartPole-v1", logdir=tmp_path / "b", presets=["debug"], steps=70, overrides=overrides,
                           progress=False)
    assert longer["updates"] == 70 - 64 + 1  # from the 64th step on, one per step
