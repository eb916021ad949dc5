"""The non-finite guard: an update with a NaN/inf loss or gradient changes nothing and is counted;
a run whose updates keep failing stops with a clear error and its last good checkpoint intact."""

from __future__ import annotations

import copy

import numpy as np
import torch
from resume_envs import NAN_REWARD_VARIABLE, STAMPED_ID
from test_agent import make_agent, random_batch
from toy_envs import CueEnv

from reverie import cli
from reverie.nn.optim import LaProp
from reverie.run import checkpoint as ckpt


def snapshot(agent) -> dict[str, torch.Tensor]:
    """Every tensor an update may change: weights, slow critic, buffers, optimiser state."""
    tensors = {f"module/{k}": v.clone() for k, v in agent.state_dict()["modules"].items()}
    for name, optimizer in agent.optimizers.items():
        for i, state in optimizer.state_dict()["state"].items():
            tensors.update({f"optim/{name}/{i}/{k}": v.clone() for k, v in state.items()})
    return tensors


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])} | (after.keys() - before.keys())


def test_a_nan_batch_leaves_every_tensor_unchanged_and_a_good_batch_then_trains():
    agent, env, cfg = make_agent(lambda: CueEnv())
    batch = random_batch(env, cfg)
    agent.train_step(batch)  # optimiser state exists from here on
    before = snapshot(agent)
    poisoned = {**batch, "reward": np.where(np.arange(batch["reward"].size).reshape(batch["reward"].shape) == 3,
                                            np.nan, batch["reward"]).astype(np.float32)}
    metrics = agent.train_step(poisoned)
    assert metrics["train/nonfinite"].item() == 1.0
    assert changed(before, snapshot(agent)) == set()

    metrics = agent.train_step(batch)
    assert metrics["train/nonfinite"].item() == 0.0
    moved = changed(before, snapshot(agent))
    assert any(k.startswith("module/wm.") for k in moved) and any(k.startswith("module/ac.slow_critic") for k in moved)
    assert any(k.endswith("/step") for k in moved)


def test_laprop_apply_false_keeps_weights_moments_and_step_even_with_inf_grads():
    weight = torch.nn.Parameter(torch.ones(3))
    opt = LaProp([weight], lr=0.1, warmup=0)
    weight.grad = torch.tensor([1.0, -2.0, 0.5])
    opt.step(apply=torch.tensor(True))
    state = {k: v.clone() for k, v in opt.state[weight].items()}
    value = weight.detach().clone()
    weight.grad = torch.tensor([float("inf"), float("nan"), 1.0])
    opt.step(apply=torch.tensor(False))
    assert torch.equal(weight.detach(), value)
    assert all(torch.equal(opt.state[weight][k], v) for k, v in state.items())
    # A gated step that applies equals an ungated one.
    twin = torch.nn.Parameter(value.clone())
    twin_opt = LaProp([twin], lr=0.1, warmup=0)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # loading shares tensors otherwise
    weight.grad = twin.grad = torch.tensor([0.3, 0.1, -0.2])
    opt.step(apply=torch.tensor(True))
    twin_opt.step()
    torch.testing.assert_close(weight.detach(), twin.detach())


def test_a_run_whose_updates_keep_failing_stops_with_exit_1_and_a_good_checkpoint(tmp_path, monkeypatch, capsys):
    logdir = tmp_path / "run"
    args = ["--preset", "debug", "--no-progress", "run.prefill=100", "run.train_ratio=16", "run.eval_every=0",
            "run.report_every=0", "run.log_every=0", "run.max_nonfinite_updates=5"]
    assert cli.main(["train", "--env", f"resume_envs:{STAMPED_ID}", "--logdir", str(logdir), "--steps", "150",
                     *args]) == 0
    good = ckpt.list_checkpoints(logdir / "checkpoints")[-1]
    contents = good.read_bytes()
    monkeypatch.setenv(NAN_REWARD_VARIABLE, "1")  # the env now returns NaN rewards
    capsys.readouterr()
    assert cli.main(["train", "--logdir", str(logdir), "--steps", "2000", "--no-progress"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "5 updates in a row had a non-finite loss or gradient" in lines[0]
    assert f"the last good checkpoint is {good}" in lines[0]
    assert ckpt.list_checkpoints(logdir / "checkpoints") == [good] and good.read_bytes() == contents
    _, payload = ckpt.load_latest_checkpoint(logdir / "checkpoints")
    weights = payload["agent"]["modules"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
