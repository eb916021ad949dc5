"""benchmarks/compare.py on a tiny budget: a Reverie preset and an SB3 baseline on one env under one
evaluation protocol, and GymView, the Gymnasium face of a Reverie env that SB3 trains on."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import compare  # noqa: E402

from reverie import config as C  # noqa: E402


def test_gym_view_flattens_observations_maps_discrete_actions_and_splits_truncation():
    view = compare.GymView("CartPole-v1", C.make_config().env, seed=0)
    obs, _ = view.reset()
    assert obs.shape == (4,) and obs.dtype == np.float32 and view.action_space.n == 2
    steps, done = 0, False
    while not done:
        obs, reward, terminated, truncated, _ = view.step(steps % 2)  # alternate: balances for a while
        steps += 1
        done = terminated or truncated
    assert reward == 1.0 and terminated and not truncated and steps < 500


def test_pendulum_is_a_box_in_minus_one_to_one_and_ends_by_truncation():
    view = compare.GymView("Pendulum-v1", C.make_config().env, seed=0)
    assert view.action_space.shape == (1,) and view.action_space.high[0] == 1.0
    view.reset()
    for _ in range(199):
        assert view.step(np.zeros(1, np.float32))[3] is False
    _, _, terminated, truncated, _ = view.step(np.zeros(1, np.float32))
    assert truncated and not terminated


def test_a_tiny_comparison_writes_one_table_for_both_agents(tmp_path):
    fast = ["run.prefill=50", "run.train_ratio=8", "run.report_every=0"]
    argv = ["--task", "CartPole-v1", "--agent", "debug", "--agent", "sb3:DQN", "--steps", "200",
            "--eval-every", "100", "--eval-episodes", "1", "--runs-dir", str(tmp_path / "runs"),
            "--out", str(tmp_path / "out"), *[x for item in fast for x in ("--set", "debug", item)]]
    assert compare.main(argv) == 0
    result = json.loads((tmp_path / "out" / "compare_CartPole-v1.json").read_text())
    by_agent = {r["agent"]: r for r in result["results"]}
    assert set(by_agent) == {"debug", "sb3:DQN"}
    for r in by_agent.values():
        assert [s for s, _, _ in r["curve"]] == [0, 100, 200]  # one protocol: the same eval steps
    table = (tmp_path / "out" / "compare_CartPole-v1.md").read_text()
    assert "| sb3:DQN | 0 |" in table and "RL Zoo 22e3ff2" in table and "| debug | 0 |" in table  # tuned: CartPole


def test_an_unknown_sb3_algorithm_is_refused():
    with pytest.raises(SystemExit):
        compare.parse_args(["--agent", "sb3:XYZ"])
