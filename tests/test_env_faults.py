"""Env faults: an env that raises, or whose worker process dies, is rebuilt; its episode ends with
is_last (not is_terminal), the other envs go on, restarts are counted, and training continues."""

from __future__ import annotations

import functools
import os
import signal
import warnings

import gymnasium as gym
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
    assert [r for r in rows if "env/restarts" in r][-1]["env/restarts"] == 2
    restarted = [r["step"] for r in rows if r.get("env/restarts") == 1]
    assert restarted and 150 < restarted[0] <= 160


class FaultyEnv(gym.Env):
    """Observation (2,) [build, t] ((3,) from build `wide_from` on), info log {"t": t}; episodes of
    `length` steps. Every instance fails at its `fail_at`-th step (0: never), counted across its
    episodes: it raises RuntimeError (`how="raise"`), raises a user error (`"user"`), exits
    (`"exit"`) or SIGKILLs its own process (`"kill"`; the last two only in env workers). Builds are
    counted in the file `builds` (shared with worker processes); builds listed in `fail_builds`
    raise in the constructor."""

    def __init__(self, builds: str, fail_at: int = 0, how: str = "raise", fail_builds: tuple = (),
                 wide_from: int = 0, length: int = 50):
        with open(builds, "a") as file:
            file.write("x")
        self.build = os.path.getsize(builds)
        if self.build in fail_builds:
            raise RuntimeError(f"build {self.build} failed on purpose")
        size = 3 if wide_from and self.build >= wide_from else 2
        self.observation_space = gym.spaces.Box(0.0, 1e6, (size,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.fail_at, self.how, self.length, self.steps, self.t = fail_at, how, length, 0, 0

    def _obs(self) -> np.ndarray:
        return np.float32([self.build, self.t] + [0] * (self.observation_space.shape[0] - 2))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {"log": {"t": self.t}}

    def step(self, action):
        self.steps += 1
        self.t += 1
        if self.steps == self.fail_at:
            if self.how == "exit":
                os._exit(1)
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.how == "user":
                raise EnvError("this env is misconfigured on purpose")
            raise RuntimeError(f"crash on purpose at step {self.steps}")
        return self._obs(), 1.0, False, self.t >= self.length, {"log": {"t": self.t}}


def faulty(tmp_path, name: str = "builds", **kwargs) -> functools.partial:
    """A picklable factory of FaultyEnv counting its builds in tmp_path / name."""
    return functools.partial(FaultyEnv, str(tmp_path / name), **kwargs)


def builds(tmp_path, name: str = "builds") -> int:
    return os.path.getsize(tmp_path / name)


def step_all(venv: VecEnv, steps: int) -> list[dict[str, np.ndarray]]:
    """reset, then `steps` steps; warnings are recorded (each restart must warn: see below)."""
    return [venv.reset()] + [venv.step(ACTION[: venv.num_envs]) for _ in range(steps)]


@pytest.mark.parametrize("parallel, how", [(False, "raise"), (True, "exit"), (True, "kill")])
def test_every_fault_cuts_the_episode_and_stepping_goes_on(parallel, how, tmp_path):
    # Env 0 fails at the 3rd step of every instance: reset, 2 steps, the cut step, then again.
    # Env 1 never fails and runs one 50-step episode through all of it.
    steps = 40 if not parallel else 8
    factories = [faulty(tmp_path, fail_at=3, how=how), faulty(tmp_path, "other")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # shows a repeated warning text only once
        with VecEnv(factories, parallel=parallel, max_restarts=1) as venv:
            rows = step_all(venv, steps)
            assert venv.restarts == steps // 4
    faults = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(faults) == steps // 4 and all(m.startswith("env 0 failed (") for m in faults)
    if how == "raise":
        assert "crash on purpose at step 3" in faults[0] and "test_env_faults.py" in faults[0]  # traceback tail
    else:
        assert f"exit code {1 if how == 'exit' else -signal.SIGKILL}" in faults[0]
    for t, row in enumerate(rows):
        assert {k: (v.dtype, v.shape) for k, v in row.items()} == {k: (v.dtype, v.shape) for k, v in rows[0].items()}
        assert row["vector"][1].tolist() == [1, t] and row["log/t"][1] == t and not row["is_last"][1]
        phase, build = t % 4, 1 + t // 4  # build n of env 0 serves rows 4(n-1) .. 4(n-1)+3
        assert row["is_first"][0] == (phase == 0) and row["is_last"][0] == (phase == 3)
        assert not row["is_terminal"][0] and row["reward"][0] == (phase in (1, 2))
        assert row["vector"][0].tolist() == [build, min(phase, 2)]  # the cut step repeats the last observation
        assert row["log/t"][0] == min(phase, 2)  # and its log values
    assert builds(tmp_path) == 1 + steps // 4 and builds(tmp_path, "other") == 1


def test_envs_failing_together_in_workers_are_all_restarted(tmp_path):
    factories = [faulty(tmp_path, "a", fail_at=2, how="exit"), faulty(tmp_path, "b", fail_at=2, how="kill")]
    with pytest.warns(RuntimeWarning), VecEnv(factories, parallel=True, max_restarts=1) as venv:
        rows = step_all(venv, 4)
        assert venv.restarts == 2
    assert rows[2]["is_last"].all() and not rows[2]["is_terminal"].any() and rows[3]["is_first"].all()
    assert rows[4]["vector"].tolist() == [[2, 1], [2, 1]] and not rows[4]["is_last"].any()


@pytest.mark.parametrize("parallel", [False, True])
def test_a_failed_rebuild_is_one_more_fault(parallel, tmp_path):
    # Build 1 fails at its 2nd step; rebuilding fails once (build 2), build 3 takes over.
    factory = faulty(tmp_path, fail_at=2, fail_builds=(2,))
    with pytest.warns(RuntimeWarning, match="build 2 failed on purpose"):
        with VecEnv([factory, faulty(tmp_path, "other")], parallel=parallel, max_restarts=2) as venv:
            rows = step_all(venv, 4)
            assert venv.restarts == 1 and builds(tmp_path) == 3
    assert rows[2]["is_last"][0] and rows[3]["is_first"][0] and rows[4]["vector"][0].tolist() == [3, 1]
    # With room for one fault in a row only, the failed rebuild is one too many.
    with pytest.warns(RuntimeWarning):
        with VecEnv([faulty(tmp_path, "again", fail_at=2, fail_builds=(2,))], parallel=parallel,
                    max_restarts=1) as venv:
            step_all(venv, 1)
            with pytest.raises(WorkerError, match="build 2 failed on purpose .*failed 2 times in a row"):
                venv.step(ACTION[:1])


@pytest.mark.parametrize("parallel", [False, True])
def test_construction_failures_and_other_spaces_after_a_rebuild_are_not_retried(parallel, tmp_path):
    error = WorkerError if parallel else RuntimeError
    with pytest.raises(error, match="build 1 failed on purpose"):
        VecEnv([faulty(tmp_path, fail_builds=(1,))], parallel=parallel, max_restarts=5)
    assert builds(tmp_path) == 1
    with pytest.warns(RuntimeWarning), VecEnv([faulty(tmp_path, "wide", fail_at=1, wide_from=2)],
                                              parallel=parallel, max_restarts=5) as venv:
        venv.reset()
        with pytest.raises(EnvError, match="env 0 was rebuilt after a fault with different observation/action"):
            venv.step(ACTION[:1])


def test_in_workers_user_errors_propagate_and_without_restarts_a_death_raises(tmp_path):
    with VecEnv([faulty(tmp_path, fail_at=1, how="user")], parallel=True, max_restarts=5) as venv:
        venv.reset()
        with pytest.raises(EnvError, match="misconfigured on purpose"):
            venv.step(ACTION[:1])
    with VecEnv([faulty(tmp_path, fail_at=1, how="exit")], parallel=True, max_restarts=0) as venv:
        venv.reset()
        with pytest.raises(WorkerError, match=r"env worker 0 failed: .*exit code 1"):
            venv.step(ACTION[:1])
        assert venv.restarts == 0
    assert builds(tmp_path) == 2  # nothing was rebuilt
