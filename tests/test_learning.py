"""Learning: the whole agent solves a task that a broken one cannot (see toy_envs.CueEnv).

Random play scores 4 of 8 (std of a 20-episode mean ≈ 0.3); the agent must reach 7. Takes about
two minutes per precision on 2 CPU cores; bf16 autocast must learn as float32 does.
"""

import pytest

import reverie
from toy_envs import CueEnv


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_agent_learns_to_follow_the_cue(tmp_path, precision):
    reverie.train(
        lambda: CueEnv(length=8), logdir=tmp_path / "cue", presets=["debug"], steps=1000, seed=0,
        overrides={"run.prefill": 100, "run.train_ratio": 128, "optim.lr": 3e-4, "run.eval_every": 0,
                   "run.precision": precision},
        progress=False,
    )
    policy = reverie.load(tmp_path / "cue", env=lambda: CueEnv(length=8))
    result = policy.evaluate(episodes=20)
    assert result["return_mean"] >= 7.0, result
