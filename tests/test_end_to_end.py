"""A whole run through the CLI: train, checkpoint, resume, evaluate (debug size, CartPole)."""

import json

import numpy as np

from reverie import cli
from reverie.logging import read_metrics
from reverie.run import checkpoint as ckpt

ARGS = ["--env", "CartPole-v1", "--preset", "debug", "--no-progress", "run.prefill=100",
        "run.train_ratio=16", "run.eval_every=200", "run.eval_episodes=2", "run.log_every=0"]


def test_train_checkpoint_resume_eval(tmp_path, capsys):
    logdir = tmp_path / "run"
    assert cli.main(["train", "--logdir", str(logdir), "--steps", "300", *ARGS]) == 0
    assert (logdir / "config.yaml").exists()
    checkpoints = ckpt.list_checkpoints(logdir / "checkpoints")
    assert [p.name for p in checkpoints] == ["ckpt_000000300.pt"]
    _, payload = ckpt.load_latest_checkpoint(logdir / "checkpoints")
    first_updates = payload["counters"]["updates"]
    assert first_updates > 0
    rows = read_metrics(logdir / "metrics.jsonl")
    assert all("step" in row for row in rows)
    evals = [row for row in rows if "eval/return_mean" in row]
    assert [row["step"] for row in evals] == [0, 200, 300]

    # Resume on the same logdir up to 450 steps: counters and replay carry on.
    assert cli.main(["train", "--logdir", str(logdir), "--steps", "450", "--no-progress"]) == 0
    _, payload = ckpt.load_latest_checkpoint(logdir / "checkpoints")
    assert payload["counters"]["step"] == 450
    # 150 more steps at 16/64 = 0.25 updates per step.
    assert payload["counters"]["updates"] == first_updates + 150 * 16 // 64
    rows = read_metrics(logdir / "metrics.jsonl")
    train_rows = [r for r in rows if "replay_steps" in r]
    assert train_rows[-1]["replay_steps"] == 450  # the replay was restored, not refilled
    steps = [r["step"] for r in train_rows]
    assert steps == sorted(steps) and steps[-1] == 450
    assert payload["replay"]["added"] == 450
    chunks = sorted((logdir / "replay").glob("chunk_*.npz"))  # contiguous, ending at the checkpoint
    spans = [tuple(int(x) for x in p.stem.split("_")[1:]) for p in chunks]
    assert spans[0][0] == 0 and spans[-1][1] == 450
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))

    # Evaluate the newest checkpoint.
    capsys.readouterr()
    assert cli.main(["eval", "--logdir", str(logdir), "--episodes", "2"]) == 0
    assert "mean return" in capsys.readouterr().out
    history = json.loads((logdir / "eval.json").read_text())
    assert history[-1]["step"] == 450 and history[-1]["episodes"] == 2
    assert np.isfinite(history[-1]["return_mean"])


def test_python_api_with_env_instance_and_policy(tmp_path, capsys):
    import gymnasium as gym

    import reverie

    logdir = tmp_path / "api"
    result = reverie.train(gym.make("CartPole-v1"), logdir=logdir, presets=["debug"], steps=200,
                           overrides={"run.prefill": 100, "run.train_ratio": 16}, progress=False)
    assert result["step"] == 200
    # The run remembers that it was trained on an object: the CLI asks for it from Python.
    assert cli.main(["eval", "--logdir", str(logdir)]) == 2
    assert "trained on a Python env object (CartPoleEnv)" in capsys.readouterr().err
    policy = reverie.load(logdir, env=gym.make("CartPole-v1"))
    env = policy.make_env(seed=3)
    step, state, total = env.reset(), policy.initial_state(), 0.0
    while not step["is_last"]:
        action, state = policy.act(step, state)
        step = env.step(action)
        total += float(step["reward"])
    assert total >= 1.0
