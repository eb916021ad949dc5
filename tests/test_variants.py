"""The pieces that define the older family members, asserted directly: Gaussian latents, KL
balancing and batch-mean free nats, symlog-space bins, the tanh-Normal policy, dynamics backprop
reaching the actor through the model (and nothing else), the copied target critic, Adam with
global-norm clipping, the learnt initial state, the GRU's update-gate bias and the training schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_agent import random_batch

from reverie import config as C
from reverie.agents.dreamer import DreamerAgent
from reverie.nn.distributions import Normal, TanhNormal, TwoHot
from reverie.envs import make_env
from reverie.nn.optim import Adam
from reverie.agents.dreamer.rssm import RSSM, clip_mean


def make(preset: str, env: str = "Pendulum-v1", overrides=()):
    cfg = C.make_config(C.compose_presets([preset, "debug"]), list(overrides))
    env = make_env(env, cfg.env)
    return DreamerAgent(env.obs_space, env.act_space, cfg), env, cfg


def test_normal_kl_matches_the_closed_form():
    p = Normal(torch.tensor([[0.5], [1.0]]), torch.tensor([[2.0], [0.5]]), event_dims=2)
    q = Normal(torch.tensor([[0.0], [0.0]]), torch.tensor([[1.0], [1.0]]), event_dims=2)
    # Σ ln(σq/σp) + (σp² + (μp − μq)²)/(2σq²) − ½
    expected = (math.log(1 / 2) + (4 + 0.25) / 2 - 0.5) + (math.log(1 / 0.5) + (0.25 + 1) / 2 - 0.5)
    torch.testing.assert_close(p.kl(q), torch.tensor(expected))
    reference = torch.distributions.kl_divergence(torch.distributions.Normal(p.mean_, p.std),
                                                  torch.distributions.Normal(q.mean_, q.std)).sum()
    torch.testing.assert_close(p.kl(q), reference)


def test_gaussian_rssm_states_and_reparameterised_samples():
    cfg = C.make_config(C.compose_presets(["dreamerv1", "debug"])).model.rssm
    rssm = RSSM(cfg, token_dim=5, action_dim=2, norm="none", act="elu")
    state = rssm.initial(3)
    assert state["stoch"].shape == (3, cfg.stoch, 1)
    tokens = torch.randn(3, 5, requires_grad=True)
    post, params = rssm.observe_step(state, torch.zeros(3, 2), tokens, torch.ones(3, dtype=torch.bool))
    assert params.shape == (3, cfg.stoch, 2)
    post["stoch"].sum().backward()  # samples carry gradients back to the observation
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    std = rssm.dist(params).std
    assert bool((std >= cfg.min_std).all())


def test_free_nats_on_the_batch_mean_pass_no_gradient_below_the_threshold():
    kl = torch.tensor([0.2, 0.4, 4.0], requires_grad=True)  # mean 1.53
    assert torch.isclose(clip_mean(kl, 1.0).mean(), kl.mean())
    clip_mean(kl, 1.0).sum().backward()
    assert torch.equal(kl.grad, torch.ones(3))  # above: the plain KL, even where a step is below
    low = torch.tensor([0.2, 0.4], requires_grad=True)
    out = clip_mean(low, 1.0)
    assert torch.equal(out, torch.ones(2))
    out.sum().backward()
    assert torch.equal(low.grad, torch.zeros(2))


@pytest.mark.parametrize("preset", ["dreamerv2", "dreamerv1"])
def test_kl_balancing_routes_dyn_to_the_prior_and_rep_to_the_posterior(preset):
    cfg = C.make_config(C.compose_presets([preset, "debug"]), ["model.rssm.free_nats=0"])
    rssm = RSSM(cfg.model.rssm, token_dim=5, action_dim=2)
    shape = (2, 3, *rssm.params_shape)
    post, prior = torch.randn(shape, requires_grad=True), torch.randn(shape, requires_grad=True)
    dyn, rep, _ = rssm.kl_losses(post, prior)
    torch.testing.assert_close(dyn, rep)  # the same KL[q ‖ p], split by where its gradient goes
    dyn_post, dyn_prior = torch.autograd.grad(dyn.sum(), [post, prior], allow_unused=True, retain_graph=True)
    rep_post, rep_prior = torch.autograd.grad(rep.sum(), [post, prior], allow_unused=True)
    assert dyn_post is None and dyn_prior.abs().sum() > 0
    assert rep_prior is None and rep_post.abs().sum() > 0
    # With V2's α = 0.8 the prior learns 4× faster than the posterior is regularised.
    scales = cfg.loss_scales
    assert (scales.dyn, scales.rep) == ((0.8, 0.2) if preset == "dreamerv2" else (1.0, 1.0))


def test_symlog_bins_predict_their_target_and_differ_from_symexp_bins():
    bins = torch.linspace(-20, 20, 255)
    for y in (-300.0, -1.0, 0.0, 0.3, 1234.5):
        # The two-hot encoding of the target is the distribution that minimises the loss.
        logits = torch.full((255,), -1e9)
        t = torch.sign(torch.tensor(y)) * torch.log1p(torch.tensor(abs(y)))
        k = int(torch.searchsorted(bins, t, right=True)) - 1
        w = float((bins[k + 1] - t) / (bins[k + 1] - bins[k]))
        logits[k], logits[k + 1] = math.log(max(w, 1e-30)), math.log(max(1 - w, 1e-30))
        dist = TwoHot(logits, bins, symlog=True)
        assert abs(float(dist.mean()) - y) <= 1e-3 * max(1.0, abs(y))
        assert float(dist.loss(torch.tensor(y))) < float(TwoHot(torch.zeros(255), bins, symlog=True).loss(torch.tensor(y)))


def test_tanh_normal_log_prob_matches_torch_and_mode_is_tanh_of_the_squashed_mean():
    mean, raw = torch.tensor([0.3, -2.0]), torch.tensor([-4.0, -5.0])
    dist = TanhNormal(mean, raw, min_std=1e-4, init_std=5.0)
    loc = 5 * torch.tanh(mean / 5)
    std = torch.nn.functional.softplus(raw + math.log(math.expm1(5.0))) + 1e-4
    reference = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(loc, std), [torch.distributions.TanhTransform()])
    value = torch.tensor([0.2, -0.7])
    torch.testing.assert_close(dist.log_prob(value), reference.log_prob(value).sum(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dist.mode(), torch.tanh(loc))
    assert bool((dist.sample().abs() <= 1).all())


@pytest.mark.parametrize("preset, backprop", [("dreamerv1", True), ("dreamerv2", True), ("dreamerv3", False)])
def test_dynamics_backprop_reaches_the_actor_through_the_model_and_trains_only_the_actor(preset, backprop):
    agent, env, cfg = make(preset)
    assert agent.ac.backprop is backprop
    data = agent.to_tensors(random_batch(env, cfg))
    losses, _ = agent.compute_losses(data)
    policy = losses["policy"].mean()
    dynamics = list(agent.wm.rssm.core_net.parameters())
    through_model = torch.autograd.grad(policy, dynamics, allow_unused=True, retain_graph=True)
    assert any(g is not None and g.abs().sum() > 0 for g in through_model) is backprop
    if not backprop:
        return
    # The routed backward: the policy loss moves the actor only; the model's gradient is that of
    # its own losses.
    scaled = {k: agent.scales[k] * v.float().mean() for k, v in losses.items()}
    agent.backward(scaled, sum(scaled.values()))
    model_losses = sum(v for k, v in scaled.items() if k in ("rec", "rew", "con", "dyn", "rep"))
    expected = torch.autograd.grad(model_losses, dynamics, allow_unused=True)
    for param, grad in zip(dynamics, expected):
        torch.testing.assert_close(param.grad, grad)
    assert all(p.grad is not None for p in agent.ac.actor.parameters())


def test_target_critic_is_copied_every_100_updates():
    agent, _, _ = make("dreamerv2")
    critic, slow = agent.ac.critic, agent.ac.slow_critic
    for update in range(1, 201):
        with torch.no_grad():
            for p in critic.parameters():
                p.add_(0.01)
        agent.ac.update_slow_critic(torch.tensor(True))
        same = all(torch.equal(a, b) for a, b in zip(critic.parameters(), slow.parameters()))
        assert same is (update % 100 == 0), update
    agent.ac.update_slow_critic(torch.tensor(False))  # a skipped update does not count
    assert int(agent.ac.slow_updates) == 200


def test_adam_matches_torch_adam_and_clips_the_global_norm():
    torch.manual_seed(0)
    ours, theirs = torch.nn.Parameter(torch.randn(4)), torch.nn.Parameter(torch.zeros(4))
    theirs.data.copy_(ours.data)
    a, b = Adam([ours], lr=1e-2, eps=1e-8), torch.optim.Adam([theirs], lr=1e-2, eps=1e-8)
    for _ in range(5):
        grad = torch.randn(4)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        a.step()
        b.step()
    torch.testing.assert_close(ours.data, theirs.data)
    # Clipping scales the whole gradient to norm `clip`: Adam's first step is then lr·sign-like.
    x, y = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    clipped = Adam([x, y], lr=1.0, clip=1.0, eps=0.0)
    x.grad, y.grad = torch.tensor([30.0, 0.0]), torch.tensor([0.0, 40.0])  # norm 50
    clipped.step()
    state = clipped.state[x]
    torch.testing.assert_close(state["exp_avg"], 0.1 * torch.tensor([0.6, 0.0]))


def test_learnt_initial_state_resets_episodes_and_is_trained():
    agent, env, cfg = make("dreamerv3_2023")
    rssm = agent.wm.rssm
    start = rssm.initial(2)
    torch.testing.assert_close(start["deter"], torch.tanh(rssm.initial_deter).expand(2, -1))
    data = agent.to_tensors(random_batch(env, cfg))
    losses, _ = agent.compute_losses(data)
    total = sum(v.float().mean() for k, v in losses.items() if k in ("rec", "rew", "con", "dyn", "rep"))
    (grad,) = torch.autograd.grad(total, [rssm.initial_deter])
    assert grad.abs().sum() > 0


def test_train_every_runs_the_earned_updates_in_bursts(tmp_path):
    import reverie

    result = reverie.train("Pendulum-v1", logdir=tmp_path / "run", presets=["dreamerv1", "debug"], steps=600,
                           overrides={"run.prefill": 100, "run.train_every": 250, "run.train_ratio": 16,
                                      "run.eval_every": 0, "run.report_every": 0, "run.log_every": 0},
                           progress=False)
    rows = [r for r in reverie.logging.read_metrics(tmp_path / "run" / "metrics.jsonl") if "updates" in r]
    by_step = {r["step"]: r["updates"] for r in rows}
    # 16 / (4 × 16) = 0.25 updates per step, spent at steps 250 and 500 only.
    assert by_step[249] == 0 and by_step[250] == 150 // 4 and by_step[499] == by_step[250]
    assert by_step[500] == 400 // 4 and result["updates"] == 100
    assert np.isfinite([r for r in rows if r["step"] == 500][0]["loss/total"])


def test_update_gate_bias_sets_how_much_of_h_the_gru_keeps():
    """h' = u·tanh(σ(r)·c) + (1 − u)·h with u = σ(x + bias): hand-computed at x = 0, and a core built
    with a low `model.rssm.update_bias` keeps more of its state through steps of new input."""
    from reverie.agents.dreamer.rssm import gru_update
    zero, h = torch.zeros(1, 2), torch.tensor([[0.5, -0.5]])
    cand = torch.full((1, 2), 2.0)  # with reset 0: tanh(σ(0) · 2) = tanh(1)
    for bias, kwargs in ((-1.0, {}), (-4.0, {"update_bias": -4.0})):  # the default is the official −1
        u = 1 / (1 + math.exp(-bias))  # σ(bias)
        torch.testing.assert_close(gru_update(zero, cand, zero, h, **kwargs), u * math.tanh(1.0) + (1 - u) * h)

    def kept(bias: float) -> float:
        torch.manual_seed(0)
        cfg = C.make_config(C.compose_presets(["debug"]), [f"model.rssm.update_bias={bias}"])
        rssm = RSSM(cfg.model.rssm, token_dim=8, action_dim=2)
        start = torch.rand(64, cfg.model.rssm.deter) * 2 - 1
        deter = start
        for _ in range(10):
            stoch = torch.nn.functional.one_hot(torch.randint(cfg.model.rssm.classes, (64, cfg.model.rssm.stoch)),
                                                cfg.model.rssm.classes).float()
            deter = rssm.core(deter, stoch, torch.randn(64, 2))
        return float(torch.corrcoef(torch.stack([start.flatten(), deter.detach().flatten()]))[0, 1])

    assert kept(-4.0) > 0.5 > kept(-1.0)
