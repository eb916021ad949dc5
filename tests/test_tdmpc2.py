"""TD-MPC2 (reverie/agents/tdmpc2/): SimNorm, the policy prior, the TD target's min over two target
Q-functions, which modules each loss trains, dropout only in training, windows that cross an
episode boundary, checkpoint round trips, the errors for spaces it cannot serve, and a short run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from family_runs import train_then_resume
from toy_envs import CueEnv, DictObsEnv

from reverie import config as C
from reverie.agents import make_agent
from reverie.agents.tdmpc2.model import GaussianPolicy, SimNorm
from reverie.envs import make_env
from reverie.errors import ConfigError

SMALL = ["tdmpc2.latent_dim=32", "tdmpc2.mlp_dim=32", "tdmpc2.enc_dim=32", "batch_size=8",
         "behavior.planner.candidates=32", "behavior.planner.top_k=4", "behavior.planner.policy_samples=4",
         "behavior.planner.iterations=2"]


def make(env="Pendulum-v1", overrides=()):
    cfg = C.make_config(C.compose_presets(["tdmpc2"]), [*SMALL, *overrides])
    built = make_env(env, cfg.env)
    return make_agent(built.obs_space, built.act_space, cfg), built


def batch(B=8, T=4, seed=0, first_at=None):
    rng = np.random.default_rng(seed)
    is_first = np.zeros((B, T), bool)
    if first_at is not None:
        is_first[:, first_at] = True
    return {"vector": rng.normal(size=(B, T, 3)).astype(np.float32),
            "action": rng.uniform(-1, 1, (B, T, 1)).astype(np.float32),
            "reward": rng.normal(size=(B, T)).astype(np.float32), "is_first": is_first,
            "is_last": np.zeros((B, T), bool), "is_terminal": np.zeros((B, T), bool)}


def tensors(data):
    return {k: torch.as_tensor(v) for k, v in data.items()}


def test_simnorm_makes_each_group_of_eight_a_distribution():
    x = torch.randn(5, 64) * 10
    groups = SimNorm(8)(x).view(5, 8, 8)
    assert torch.allclose(groups.sum(-1), torch.ones(5, 8)) and bool((groups >= 0).all())
    assert torch.allclose(groups, torch.softmax(x.view(5, 8, 8), -1))


def test_the_policy_prior_squashes_and_its_log_std_stays_in_bounds():
    torch.manual_seed(0)
    pi = GaussianPolicy(4, [16], 3, -10.0, 2.0)
    out = pi(torch.randn(100, 4) * 100)
    assert out["action"].abs().max() <= 1 and out["mean"].abs().max() <= 1
    raw = pi.net(torch.randn(100, 4) * 100).chunk(2, -1)[1]
    log_std = -10 + 6 * (torch.tanh(raw) + 1)
    assert log_std.min() >= -10 and log_std.max() <= 2


def test_the_td_target_takes_the_min_of_two_target_members():
    torch.manual_seed(0)
    agent, _ = make()
    m = agent.model
    z, a = torch.rand(6, 32), torch.rand(6, 1)
    logits = m.q_logits(z, a, "target")  # (K, 6, bins)
    from reverie.nn import maths as ops

    values = ops.symexp(ops.twohot_logits_mean(logits, m.bins))  # (K, 6)
    torch.manual_seed(3)
    got = m.q(z, a, "target", "min")
    torch.manual_seed(3)
    pick = torch.randperm(logits.shape[0])[:2]
    assert torch.allclose(got, values[pick].min(0).values)
    torch.manual_seed(3)
    assert torch.allclose(m.q(z, a, "target", "mean"), values[pick].mean(0))


def test_model_losses_train_the_model_and_the_policy_loss_only_the_policy():
    torch.manual_seed(0)
    agent, _ = make()
    m = agent.model
    for p in m.parameters():  # non-zero output layers, so every module gets a gradient
        p.data.add_(0.05 * torch.randn_like(p))
    data = tensors(batch())
    data["obs"] = agent.observation({"vector": data["vector"]})
    losses, zs, live = agent.losses(data)
    sum(losses.values()).backward()
    assert all(p.grad is None or not p.grad.any() for p in m.pi.parameters())
    for module in (m.encoder, m.dynamics, m.reward_net, m.qs):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    m.zero_grad(set_to_none=True)
    agent.policy_loss(zs, live).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.pi.parameters())
    others = [p for name, p in m.named_parameters() if not name.startswith("pi.")]
    assert all(p.grad is None for p in others)


def test_dropout_acts_in_training_only_and_never_in_the_target():
    torch.manual_seed(0)
    agent, _ = make(overrides=["tdmpc2.dropout=0.5"])
    m = agent.model
    z, a = torch.rand(6, 32), torch.rand(6, 1)
    for p in m.qs.params():
        p.data.add_(0.1 * torch.randn_like(p))
    m.eval()
    assert torch.equal(m.q_logits(z, a), m.q_logits(z, a))  # planning: deterministic
    m.train()
    assert not torch.equal(m.q_logits(z, a), m.q_logits(z, a))
    assert torch.equal(m.q_logits(z, a, "target"), m.q_logits(z, a, "target"))


def test_steps_after_a_new_episode_in_the_window_do_not_count():
    torch.manual_seed(0)
    agent, _ = make()
    first = tensors(batch(first_at=2))
    other = {k: v.clone() for k, v in first.items()}
    other["vector"][:, 2:] += 5.0  # the next episode's steps differ
    other["reward"][:, 2:] -= 3.0
    out = []
    for data in (first, other):
        data["obs"] = agent.observation({"vector": data["vector"]})
        torch.manual_seed(1)
        losses, _, live = agent.losses(data)
        out.append({k: float(v.detach()) for k, v in losses.items()})
    assert out[0] == pytest.approx(out[1], rel=1e-6)
    assert live[:, 0].tolist() == [1, 1, 0, 0]


def test_a_checkpoint_round_trip_gives_the_same_next_update():
    agent, built = make()
    agent.train_step(batch(seed=0))
    state = agent.state_dict()
    twin = make_agent(built.obs_space, built.act_space, agent.cfg)
    twin.load_state_dict(state)
    torch.manual_seed(5)
    a = agent.train_step(batch(seed=1))
    torch.manual_seed(5)
    b = twin.train_step(batch(seed=1))
    assert {k: float(v) for k, v in a.items()} == {k: float(v) for k, v in b.items()}
    for p, q in zip(agent.parameters(), twin.parameters()):
        assert torch.equal(p, q)


def test_a_non_finite_batch_skips_the_whole_update():
    agent, _ = make()
    before = [p.clone() for p in agent.parameters()] + [b.clone() for b in agent.buffers()]
    bad = batch()
    bad["reward"][0, 1] = np.nan
    metrics = agent.train_step(bad)
    assert float(metrics["train/nonfinite"]) == 1.0
    after = list(agent.parameters()) + list(agent.buffers())
    assert all(torch.equal(x, y) for x, y in zip(before, after))


def test_acting_plans_and_restarts_the_plan_with_an_episode():
    torch.manual_seed(0)
    agent, built = make()
    obs = {k: np.stack([v] * 2) for k, v in built.reset().items()}
    state, action, extras = agent.act(agent.init_state(2), obs, "train")
    assert action.shape == (2, 1) and np.abs(action).max() <= 1 and extras == {}
    assert state["plan"].shape == (2, 3, 1) and state["plan"].abs().sum() > 0
    _, greedy, _ = agent.act(state, obs, "eval")
    assert greedy.shape == (2, 1)


@pytest.mark.parametrize(("env", "message"), [(CueEnv, "needs a continuous"), (DictObsEnv, "vector observations only")])
def test_spaces_it_cannot_serve_are_one_clear_error(env, message):
    with pytest.raises(ConfigError, match=message):
        make(env)


def test_a_short_run_trains_evaluates_and_resumes(tmp_path):
    fast = {"run.prefill": 40, "run.train_ratio": 64, "run.eval_every": 0, "run.eval_episodes": 1,
            "run.report_every": 0, "run.log_every": 0, "replay.chunk_length": 50,
            **dict(item.split("=") for item in SMALL)}
    train_then_resume(tmp_path, "Pendulum-v1", "tdmpc2", 80, 120, fast)
