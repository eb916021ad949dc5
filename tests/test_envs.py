"""Environment layer: step-dict flags, action repeat, time limits, registry, serial and parallel
vector envs. Observation and action space conversion is in test_env_spaces.py."""

from __future__ import annotations

import sys

import envs_fixtures
import gymnasium as gym
import numpy as np
import pytest
from envs_fixtures import COUNTER_ID, CounterEnv

from reverie.config import EnvConfig
from reverie.envs import (
    SUITES,
    Suite,
    default_suite_preset,
    GymEnv,
    VecEnv,
    WorkerError,
    make_env,
    make_vec_env,
    resolve,
)
from reverie.envs.gym_adapter import GymEnvFactory
from reverie.errors import EnvError

STEP_FIELDS = {"reward", "is_first", "is_last", "is_terminal"}


# ----------------------------------------------------------------------------- GymEnv


def _fields(step):
    return (float(step["reward"]), bool(step["is_first"]), bool(step["is_last"]), bool(step["is_terminal"]))


def test_reset_and_termination_flags():
    env = GymEnv(CounterEnv(terminate_at=3))
    first = env.reset()
    assert set(first) == {"vector"} | STEP_FIELDS
    assert first["reward"].dtype == np.float32 and first["reward"].shape == ()
    assert first["is_first"].dtype == bool and first["is_terminal"].shape == ()
    assert _fields(first) == (0.0, True, False, False)
    assert _fields(env.step(np.float32([1, 0]))) == (1.0, False, False, False)
    assert _fields(env.step(np.float32([0, 1]))) == (2.0, False, False, False)
    last = env.step(np.float32([1, 0]))
    assert _fields(last) == (3.0, False, True, True)
    np.testing.assert_array_equal(last["vector"], [3.0])
    assert env.env.actions == [0, 1, 0]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.float32([1, 0]))


def test_truncation_is_last_but_not_terminal():
    env = GymEnv(CounterEnv(truncate_at=2))
    env.reset()
    env.step(np.float32([1, 0]))
    assert _fields(env.step(np.float32([1, 0]))) == (2.0, False, True, False)


def test_action_repeat_sums_rewards_and_stops_at_termination():
    inner = CounterEnv(terminate_at=5)
    env = GymEnv(inner, action_repeat=3)
    env.reset()
    step = env.step(np.float32([0, 1]))
    assert _fields(step) == (1.0 + 2.0 + 3.0, False, False, False)
    np.testing.assert_array_equal(step["vector"], [3.0])
    assert _fields(env.step(np.float32([0, 1]))) == (4.0 + 5.0, False, True, True)
    assert inner.t == 5 and inner.actions == [1] * 5


def test_max_episode_steps_truncates_in_agent_steps():
    inner = CounterEnv()
    env = GymEnv(inner, action_repeat=2, max_episode_steps=2)
    env.reset()
    assert _fields(env.step(np.float32([1, 0]))) == (1.0 + 2.0, False, False, False)
    assert _fields(env.step(np.float32([1, 0]))) == (3.0 + 4.0, False, True, False)
    assert _fields(env.reset()) == (0.0, True, False, False)
    assert not env.step(np.float32([1, 0]))["is_last"]


def test_first_reset_is_seeded_later_resets_continue():
    a, b = make_env("CartPole-v1", seed=7), make_env("CartPole-v1", seed=7)
    first_a, first_b = a.reset()["vector"], b.reset()["vector"]
    np.testing.assert_array_equal(first_a, first_b)
    second_a = a.reset()["vector"]
    assert not np.array_equal(first_a, second_a)
    np.testing.assert_array_equal(second_a, b.reset()["vector"])
    assert not np.array_equal(first_a, make_env("CartPole-v1", seed=8).reset()["vector"])


def test_make_env_applies_config_and_defaults_to_its_id():
    cfg = EnvConfig(id=f"envs_fixtures:{COUNTER_ID}", action_repeat=2, max_episode_steps=1)
    env = make_env(None, cfg, seed=0)
    env.reset()
    assert _fields(env.step(np.float32([1, 0]))) == (3.0, False, True, False)


# ----------------------------------------------------------------------------- registry


def test_module_colon_id_imports_the_module_that_registers_it(monkeypatch):
    monkeypatch.delitem(gym.registry, COUNTER_ID)
    monkeypatch.delitem(sys.modules, "envs_fixtures")
    factory = resolve(f"envs_fixtures:{COUNTER_ID}")
    assert COUNTER_ID in gym.registry  # registered by the import
    env = GymEnv(factory())
    env.reset()
    steps = [env.step(np.float32([1, 0])) for _ in range(4)]
    assert [bool(s["is_terminal"]) for s in steps] == [False, False, False, True]  # kwargs terminate_at=4


def test_module_colon_attribute_instantiates_the_class_or_factory():
    assert isinstance(resolve("envs_fixtures:CounterEnv")(), CounterEnv)
    assert resolve("envs_fixtures:make_counter_env")().terminate_at == 3
    with pytest.raises(EnvError, match="registered no Gymnasium id 'Nope-v0'"):
        resolve("envs_fixtures:Nope-v0")


def test_unknown_ids_give_a_helpful_one_line_error():
    with pytest.raises(EnvError) as info:
        resolve("CartPol-v1")
    message = str(info.value)
    assert "unknown environment 'CartPol-v1'" in message and "did you mean 'CartPole-v1'" in message
    assert "my_package:MyEnv-v0" in message and "\n" not in message
    with pytest.raises(EnvError, match="unknown environment 'Foo-v9': not a registered Gymnasium id"):
        make_env("Foo-v9")
    with pytest.raises(EnvError, match="'no_such_module_xyz' is neither an importable module nor a known suite"):
        resolve("no_such_module_xyz:Env-v0")


def _fake_builder(calls):
    def builder(task, cfg, seed):
        calls.append((task, cfg.action_repeat, seed))
        return CounterEnv()

    return builder


def test_suite_prefix_dispatches_to_its_builder(monkeypatch):
    calls = []
    monkeypatch.setitem(SUITES, "fakesuite", Suite("fakesuite", _fake_builder(calls), preset="classic"))
    cfg = EnvConfig(id="fakesuite:walk", action_repeat=2, parallel=False)
    venv = make_vec_env(None, cfg, num_envs=2, seed=10)
    assert calls == [("walk", 2, 10), ("walk", 2, 11)] and not venv.parallel
    venv.close()


def test_suite_that_repeats_actions_itself_is_not_repeated_again(monkeypatch):
    for repeats, expected_reward in [(True, 1.0), (False, 1.0 + 2.0 + 3.0)]:
        monkeypatch.setitem(SUITES, "fakesuite", Suite("fakesuite", _fake_builder([]), preset="classic",
                                                       repeats_actions=repeats))
        env = make_env("fakesuite:walk", EnvConfig(action_repeat=3))
        env.reset()
        step = env.step(np.float32([1, 0]))
        assert step["reward"] == expected_reward, repeats  # reward at env step t is t


def test_suite_bare_name_missing_dependency_and_bad_task(monkeypatch):
    calls = []

    def check(task):
        if task != "good":
            raise EnvError(f"unknown task '{task}'")

    suite = Suite("fakesuite", _fake_builder(calls), preset="classic", check_task=check, default_task="good")
    monkeypatch.setitem(SUITES, "fakesuite", suite)
    make_env("fakesuite", EnvConfig())
    assert calls[-1][0] == "good"
    assert default_suite_preset("fakesuite") == "classic" and default_suite_preset("CartPole-v1") is None
    with pytest.raises(EnvError, match="unknown task 'bad'"):
        resolve("fakesuite:bad")
    missing = Suite("fakesuite", _fake_builder(calls), preset="classic", requires=("no_such_module_xyz",),
                    install="pip install no-such-module-xyz")
    monkeypatch.setitem(SUITES, "fakesuite", missing)
    with pytest.raises(EnvError, match="needs no_such_module_xyz, which is not installed; pip install no-such"):
        resolve("fakesuite:good")


def test_default_suite_preset_follows_the_env_id():
    assert default_suite_preset("dmc:walker_walk") == "dmc_proprio"
    assert default_suite_preset("atari:pong") == "atari100k"
    assert default_suite_preset("crafter") == default_suite_preset("crafter:noreward") == "crafter"
    assert default_suite_preset("my_module:Env-v0") is None


def test_instance_and_factory_specs():
    env = make_env(CounterEnv(terminate_at=2))
    assert env.reset()["is_first"]
    assert isinstance(make_env(lambda: CounterEnv()).env, CounterEnv)
    with pytest.raises(EnvError, match="one env instance cannot back 2 envs"):
        make_vec_env(CounterEnv(), EnvConfig(), num_envs=2)


# ----------------------------------------------------------------------------- VecEnv


def test_vec_env_auto_resets_finished_envs():
    fns = [GymEnvFactory(lambda: CounterEnv(terminate_at=2)), GymEnvFactory(lambda: CounterEnv(terminate_at=3))]
    venv = VecEnv(fns)
    act = np.tile(np.float32([1, 0]), (2, 1))  # (N, A)
    first = venv.step(act)  # never reset: every env returns its reset step
    assert venv.num_envs == 2 and first["is_first"].tolist() == [True, True]
    assert first["vector"].shape == (2, 1) and first["reward"].shape == (2,)
    venv.step(act)
    out = venv.step(act)
    assert out["is_last"].tolist() == [True, False] and out["is_terminal"].tolist() == [True, False]
    out = venv.step(act)  # env 0 restarts, env 1 terminates
    assert out["is_first"].tolist() == [True, False] and out["reward"].tolist() == [0.0, 3.0]
    assert out["is_last"].tolist() == [False, True]
    out = venv.step(act)
    assert out["is_first"].tolist() == [False, True] and out["vector"][:, 0].tolist() == [1.0, 0.0]
    venv.close()


def test_vec_env_seeds_env_i_with_seed_plus_i():
    venv = make_vec_env("CartPole-v1", EnvConfig(parallel=False), num_envs=2, seed=3)
    first = venv.reset()["vector"]
    np.testing.assert_array_equal(first[1], make_env("CartPole-v1", seed=4).reset()["vector"])
    venv.close()


def test_unpicklable_factory_falls_back_to_serial_with_a_warning():
    with pytest.warns(RuntimeWarning, match="cannot be pickled"):
        venv = VecEnv([lambda: CounterEnv(), lambda: CounterEnv()], parallel=True)
    assert not venv.parallel and venv.reset()["vector"].shape == (2, 1)
    venv.close()


def _rollout(venv: VecEnv, steps: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = [venv.reset()]
    for _ in range(steps):
        out.append(venv.step(venv.act_space.sample_random(rng, venv.num_envs)))
    return out


def test_serial_and_parallel_cartpole_trajectories_match():
    serial = make_vec_env("CartPole-v1", EnvConfig(parallel=False), num_envs=2, seed=1)
    parallel = make_vec_env("CartPole-v1", EnvConfig(parallel=True), num_envs=2, seed=1)
    try:
        assert parallel.parallel and not serial.parallel
        assert parallel.obs_space == serial.obs_space and parallel.act_space == serial.act_space
        a, b = _rollout(serial, 60), _rollout(parallel, 60)
        workers = list(parallel._backend._procs)
        assert all(proc.is_alive() for proc in workers)
    finally:
        serial.close()
        parallel.close()
    assert not any(proc.is_alive() for proc in workers)
    assert sum(step["is_first"][0] for step in a[1:]) >= 1  # an auto-reset happened
    for step_a, step_b in zip(a, b):
        assert step_a.keys() == step_b.keys()
        for key in step_a:
            np.testing.assert_array_equal(step_a[key], step_b[key])


def test_worker_exception_propagates_with_its_traceback():
    venv = VecEnv([GymEnvFactory(envs_fixtures.make_raising_env)], parallel=True)
    try:
        assert venv.parallel
        venv.reset()
        venv.step(np.float32([[1, 0]]))
        with pytest.raises(WorkerError) as info:
            venv.step(np.float32([[1, 0]]))
    finally:
        venv.close()
    message = str(info.value)
    assert "env worker 0 failed: ValueError: boom at step 2" in message
    assert "Traceback" in message and "envs_fixtures.py" in message


def test_worker_user_errors_and_deaths_reach_the_parent():
    with pytest.raises(EnvError, match=r"observation entry 'obs/1' has space Text\(.*not supported"):
        VecEnv([GymEnvFactory(envs_fixtures.make_tuple_obs_env)], parallel=True)
    venv = VecEnv([GymEnvFactory(envs_fixtures.make_dying_env)], parallel=True)
    try:
        venv.reset()
        with pytest.raises(WorkerError, match=r"env worker 0 failed: .*exited unexpectedly \(exit code 3\)"):
            venv.step(np.float32([[1, 0]]))
    finally:
        venv.close()
