"""The agent's shapes for vector, image and dict observations, and where each loss's gradient goes."""

import numpy as np
import pytest
import torch

from reverie import config as C
from reverie.agents.dreamer import DreamerAgent
from reverie.envs import make_env
from toy_envs import CueEnv, DictObsEnv

SMALL_CNN = ["model.encoder.mults=[2,2]", "model.decoder.mults=[2,2]"]


def make_agent(env_fn, overrides=()):
    cfg = C.make_config(C.compose_presets(["debug"]), list(overrides))
    env = make_env(env_fn, cfg.env)
    return DreamerAgent(env.obs_space, env.act_space, cfg), env, cfg


def random_batch(env, cfg, seed=0):
    """A (B, T) batch of real env steps under a random policy."""
    rng = np.random.default_rng(seed)
    B, T = cfg.batch_size, cfg.batch_length
    rows = []
    step = env.reset()
    for _ in range(B * T):
        action = env.act_space.sample_random(rng, 1)[0]
        rows.append({**step, "action": action})
        step = env.reset() if step["is_last"] else env.step(action)
    return {k: np.stack([r[k] for r in rows]).reshape(B, T, *rows[0][k].shape) for k in rows[0]}


@pytest.mark.parametrize("env_fn, extra", [
    (lambda: CueEnv(), []),
    (lambda: DictObsEnv(), SMALL_CNN),
    (lambda: DictObsEnv(), SMALL_CNN + ["model.encoder.mlp_keys=^$", "model.decoder.mlp_keys=^$"]),
])
def test_shapes_for_vector_image_and_dict_observations(env_fn, extra):
    agent, env, cfg = make_agent(env_fn, extra)
    batch = random_batch(env, cfg)
    metrics = agent.train_step(batch)
    assert all(v.shape == () and torch.isfinite(v) for v in metrics.values())
    for key in ("loss/rec", "loss/rew", "loss/con", "loss/dyn", "loss/rep", "loss/policy", "loss/value"):
        assert key in metrics
    state = agent.init_state(3)
    obs = {k: np.stack([v] * 3) for k, v in env.reset().items()}
    state, action, _ = agent.act(state, obs, "train")
    assert action.shape == (3, env.act_space.dim) and action.dtype == np.float32
    assert state["deter"].shape == (3, cfg.model.rssm.deter)
    assert state["stoch"].shape == (3, cfg.model.rssm.stoch, cfg.model.rssm.classes)
    if env.act_space.discrete:
        assert np.allclose(action.sum(-1), 1.0)
    else:
        assert np.all(np.abs(action) <= 1.0)
    report = agent.report(batch)
    for key in agent.wm.decoder.mlp_keys + agent.wm.decoder.cnn_keys:
        assert report[f"openloop/{key}/pred"].shape == batch[key].shape
    for key in agent.wm.decoder.cnn_keys:
        assert report[f"openloop/{key}/pred"].dtype == torch.uint8


def test_image_only_encoder_ignores_vector_keys():
    agent, env, cfg = make_agent(lambda: DictObsEnv(), SMALL_CNN + ["model.encoder.mlp_keys=^$"])
    assert agent.wm.encoder.mlp_keys == [] and agent.wm.encoder.cnn_keys == ["image"]


def _grads(module):
    return [p.grad for p in module.parameters() if p.requires_grad]


def _touched(module):
    return any(g is not None and g.abs().sum() > 0 for g in _grads(module))


def test_gradient_routing():
    agent, env, cfg = make_agent(lambda: CueEnv())
    batch = random_batch(env, cfg)
    for _ in range(2):  # updates so that heads are no longer zero-initialised (the first has lr 0: warm-up)
        agent.train_step(batch)
    data = agent.to_tensors(random_batch(env, cfg, seed=1))
    losses, _ = agent.compute_losses(data)

    def backward(*names):
        agent.zero_grad(set_to_none=True)
        sum(losses[n].mean() for n in names).backward(retain_graph=True)

    backward("policy")
    assert _touched(agent.ac.actor)
    assert not _touched(agent.wm) and not _touched(agent.ac.critic)

    backward("rec", "rew", "con", "dyn", "rep")
    assert _touched(agent.wm.encoder) and _touched(agent.wm.rssm) and _touched(agent.wm.reward)
    assert not _touched(agent.ac.actor) and not _touched(agent.ac.critic)

    backward("value")
    assert _touched(agent.ac.critic)
    assert not _touched(agent.wm) and not _touched(agent.ac.actor)

    backward("repval")  # the replay value loss trains the critic and the world model
    assert _touched(agent.ac.critic) and _touched(agent.wm.encoder)
    assert not _touched(agent.ac.actor)
    assert all(not p.requires_grad for p in agent.ac.slow_critic.parameters())


def test_free_bits_clip_the_kl_per_step():
    agent, _, _ = make_agent(lambda: CueEnv())
    rssm = agent.wm.rssm
    logits = torch.randn(2, 3, 4, 4)
    dyn, rep, _ = rssm.kl_losses(logits, logits.clone())  # KL = 0 → clipped to free nats = 1
    assert torch.allclose(dyn, torch.ones(2, 3)) and torch.allclose(rep, torch.ones(2, 3))
    far = torch.zeros(2, 3, 4, 4)
    far[..., 0] = 20.0
    dyn, rep, _ = rssm.kl_losses(far, -far)
    assert (dyn > 1.0).all() and torch.allclose(dyn, rep)


def test_slow_critic_tracks_critic_by_ema():
    agent, _, cfg = make_agent(lambda: CueEnv())
    critic, slow = agent.ac.critic, agent.ac.slow_critic
    with torch.no_grad():
        for p in critic.parameters():
            p.add_(1.0)
    before = [p.clone() for p in slow.parameters()]
    agent.ac.update_slow_critic()
    rate = cfg.behavior.critic.slow_rate
    for b, s, c in zip(before, slow.parameters(), critic.parameters()):
        assert torch.allclose(s, (1 - rate) * b + rate * c)


def test_state_dict_round_trip_continues_identically():
    agent, env, cfg = make_agent(lambda: CueEnv())
    batch = random_batch(env, cfg)
    agent.train_step(batch)
    state = {k: v for k, v in agent.state_dict().items()}
    clone, _, _ = make_agent(lambda: CueEnv())
    clone.load_state_dict(state)
    torch.manual_seed(5)
    a = agent.train_step(batch)
    torch.manual_seed(5)
    b = clone.train_step(batch)
    for key in a:
        assert torch.equal(a[key], b[key]), key
