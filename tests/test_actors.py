"""Actors apart from the learner (env.backend process / ray, reverie/run/actors.py): the train ratio
of the inline run, the policy copy refreshed every env.policy_every updates, a failing or killed
actor stopping the run with one clear error, and the inputs an actor cannot take."""

from __future__ import annotations

import json
import os
import signal

import gymnasium as gym
import pytest
from envs_fixtures import make_raising_env

from reverie import config as C
from reverie.errors import ConfigError, EnvError, UserError
from reverie.run.train import Trainer

QUICK = ["run.eval_every=0", "run.eval_episodes=1", "run.report_every=0", "run.log_every=1", "run.threads=1"]


def make_trainer(tmp_path, backend: str, steps: int = 200, env=None, extra=()) -> Trainer:
    cfg = C.make_config(C.compose_presets(["debug"]), [*QUICK, f"env.backend={backend}", f"run.steps={steps}",
                                                       f"logdir={tmp_path / backend}", *extra])
    return Trainer(cfg, env=env, progress=False)


def train(tmp_path, backend: str, **kwargs) -> tuple[dict, list[dict]]:
    trainer = make_trainer(tmp_path, backend, **kwargs)
    try:
        result = trainer.run()
    finally:
        trainer.close()
    rows = [json.loads(line) for line in (tmp_path / backend / "metrics.jsonl").read_text().splitlines()]
    return result, rows


@pytest.mark.parametrize("backend", ["process", "ray"])
def test_an_actor_feeds_the_learner_at_the_inline_runs_train_ratio(backend, tmp_path):
    if backend == "ray":
        pytest.importorskip("ray")
    inline, inline_rows = train(tmp_path, "inline")
    result, rows = train(tmp_path, backend)
    assert result["step"] == inline["step"] == 200 and result["updates"] == inline["updates"] > 100
    assert result["episodes"] > 5
    lag_rows = [r for r in rows if "actor/policy_lag" in r]
    lags = [r["actor/policy_lag"] for r in lag_rows]
    # weights go out every 10 updates (1 per step); the actor runs up to 8 steps (process) or 2 calls of 16 (ray)
    # ahead, plus the step it is taking
    ahead = 8 if backend == "process" else 32
    assert lags and max(lags) <= 10 + ahead + 2 and lag_rows[-1]["updates"] - lags[-1] > 0  # refreshed
    assert not any("actor/policy_lag" in r for r in inline_rows)


def test_a_failing_actor_stops_the_run_with_the_envs_error(tmp_path):
    with pytest.raises(EnvError, match=r"the actor process failed: ValueError: boom at step 2"):
        train(tmp_path, "process", env=make_raising_env, extra=["env.max_restarts=0"])


def test_a_killed_actor_process_stops_the_run(tmp_path):
    trainer = make_trainer(tmp_path, "process", steps=100_000)
    trainer.actor.reset()
    trainer.driver.reset = lambda: None  # the loop keeps the actor started here
    os.kill(trainer.actor.process.pid, signal.SIGKILL)
    try:
        with pytest.raises(EnvError, match=r"the actor process ended \(exit code -9\)"):
            trainer.run()
    finally:
        trainer.close()


def test_an_actor_takes_env_ids_and_picklable_factories_only(tmp_path):
    with pytest.raises(UserError, match=r"env.backend=process .* cannot take this env object \(function"):
        make_trainer(tmp_path, "process", env=lambda: gym.make("CartPole-v1"))
    with pytest.raises(ConfigError, match="env.backend must be inline, process or ray"):
        C.make_config([], ["env.backend=threads"])
    with pytest.raises(ConfigError, match="env.policy_every and env.actor_queue must be ≥ 1"):
        C.make_config([], ["env.policy_every=0"])
