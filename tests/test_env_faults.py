"""Env faults: an env that raises, or whose worker process dies, is rebuilt; its episode ends with
is_last (not is_terminal), the other envs go on, restarts are counted, and training continues."""

from __future__ import annotations

import numpy as np
import pytest
from resume_envs import StampedEnv, flaky_factory

import reverie
from reverie.envs import VecEnv, WorkerError
from reverie.errors import EnvError
from reverie.logging import read_metrics

ACTION = np.float32([[0, 1], [0, 1]])


def rollout(venv: VecEnv, steps: int) -> list[dict[str, np.ndarray]]:
    out = [venv.reset()]
    for _ in range(steps):
        out.append(venv.step(ACTION[: venv.num_envs]))
    return out


@pytest.mark.parametrize("parallel, how", [(False, "raise"), (True, "raise"), (True, "exit")])
def test_a_failing_env_is_restarted_and_its_episode_ends_there(parallel, how, tmp_path):
    factories = [flaky_factory(fail_at=3, how=how, marker=str(tmp_path / "failed")), StampedEnv]
    with pytest.warns(RuntimeWarning, match="env 0 failed .*restarting it"):
        with VecEnv(factories, parallel=parallel, max_restarts=2) as venv:
            rows = rollout(venv, 8)
            assert venv.restarts == 1
    fault = rows[3]  # the third step of env 0
    assert fault["is_last"][0] and not fault["is_terminal"][0] and fault["reward"][0] == 0
    np.testing.assert_array_equal(fault["vector"][0], rows[2]["vector"][0])  # its last observation again
    assert rows[4]["is_first"][0] and rows[4]["vector"][0][2] == 0  # a new episode from the rebuilt env
    assert [row["vector"][1][2] for row in rows] == list(range(9))  # env 1 never noticed
    assert not any(row["is_first"][0] for row in rows[5:])  # and env 0 goes on normally


def test_an_env_that_keeps_failing_stops_with_a_clear_error():
    with VecEnv([flaky_factory(fail_at=1)], max_restarts=2) as venv:
        venv.reset()
        with pytest.warns(RuntimeWarning):
            venv.step(ACTION[:1])  # fault 1: episode cut
            venv.step(ACTION[:1])  # reset of the rebuilt env
            venv.step(ACTION[:1])  # fault 2
            venv.step(ACTION[:1])
            with pytest.raises(WorkerError, match=r"failed 3 times in a row, more than env.max_restarts=2"):
                venv.step(ACTION[:1])


def test_a_failed_reset_is_retried_on_the_rebuilt_env(tmp_path):
    factories = [flaky_factory(on="reset", marker=str(tmp_path / "failed"))]
    with pytest.warns(RuntimeWarning, match="env 0 failed"):
        with VecEnv(factories, max_restarts=1) as venv:
            first = venv.reset()
            assert first["is_first"][0] and venv.restarts == 1


def test_user_errors_are_not_restarted_and_without_restarts_faults_raise(tmp_path):
    with VecEnv([flaky_factory(fail_at=2, how="user")], max_restarts=5) as venv:
        venv.reset()
        venv.step(ACTION[:1])
        with pytest.raises(EnvError, match="misconfigured on purpose"):
            venv.step(ACTION[:1])
    with VecEnv([flaky_factory(fail_at=2)], max_restarts=0) as venv:
        venv.reset()
        venv.step(ACTION[:1])
        with pytest.raises(RuntimeError, match="simulated crash at step 2"):
            venv.step(ACTION[:1])


def test_training_goes_on_through_env_crashes_and_counts_them(tmp_path):
    result = reverie.train(flaky_factory(fail_at=150, how="raise"), logdir=tmp_path / "run", presets=["debug"],
                           steps=400, overrides={"run.prefill": 100, "run.train_ratio": 16, "run.eval_every": 0,
                                                 "run.report_every": 0, "run.log_every": 0}, progress=False)
    assert result["step"] == 400
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    # Every fresh env instance fails at its 150th step (loop steps also count the resets after
    # its 40-step episodes): once near step 154, once more (the rebuilt one) near step 308.
    assert rows[-1]["env/restarts"] == 2
    restarted = [r["step"] for r in rows if r.get("env/restarts") == 1]
    assert restarted and 150 < restarted[0] <= 160
