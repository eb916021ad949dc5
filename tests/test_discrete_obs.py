"""Discrete observations as the official DreamerV3 code treats them: a Discrete or MultiDiscrete key
is a categorical key (its spec records the one-hot blocks), the encoder takes its one-hot without
symlog, and the decoder predicts it with one softmax per block trained with cross-entropy; Box keys
keep the symlog input and the symlog squared error."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from gymnasium import spaces

from reverie import config as C
from reverie.agents.dreamer import DreamerAgent
from reverie.agents.dreamer.world_model import MultiDecoder, MultiEncoder
from reverie.config import DecoderConfig, EncoderConfig
from reverie.envs import ArraySpec, make_env, obs_spec_from_gym
from reverie.envs.spaces import convert_obs
from reverie.nn import maths as ops
from reverie.nn.distributions import MultiOneHot, SymlogMSE
from toy_envs import DiscreteObsEnv

# ----------------------------------------------------------------------------- specs


def test_discrete_and_multidiscrete_specs_record_their_class_blocks():
    discrete = obs_spec_from_gym(spaces.Discrete(5, start=2))["vector"]
    assert discrete.classes == (5,) and discrete.categorical
    assert discrete.shape == (5,) and discrete.dtype == np.float32  # the stored one-hot is unchanged
    np.testing.assert_array_equal(convert_obs(spaces.Discrete(5, start=2), 4)["vector"], [0, 0, 1, 0, 0])

    multi = obs_spec_from_gym(spaces.MultiDiscrete([[2, 3], [4, 1]]))["vector"]
    assert multi.classes == (2, 3, 4, 1) and multi.shape == (10,) and multi.categorical

    nested = obs_spec_from_gym(spaces.Dict({
        "a": spaces.Tuple((spaces.Discrete(3), spaces.Box(-1, 1, (2,)))),
        "b": spaces.MultiDiscrete([2, 2]),
        "c": spaces.MultiBinary(3),
        "img": spaces.Box(0, 255, (4, 4, 3), np.uint8),
    }))
    assert {k: s.classes for k, s in nested.items()} == {"a/0": (3,), "a/1": (), "b": (2, 2), "c": (), "img": ()}
    assert [k for k, s in nested.items() if s.categorical] == ["a/0", "b"]
    tuple_spec = obs_spec_from_gym(spaces.Tuple((spaces.Discrete(2), spaces.MultiDiscrete([3, 4]))))
    assert tuple_spec["obs/0"].classes == (2,) and tuple_spec["obs/1"].classes == (3, 4)


def test_array_spec_checks_classes_and_old_specs_load_as_continuous():
    with pytest.raises(ValueError, match="categorical ArraySpec"):
        ArraySpec((4,), np.float32, classes=(2, 3))
    with pytest.raises(ValueError, match=">= 1"):
        ArraySpec((0,), np.float32, classes=(0,))
    spec = ArraySpec((5,), np.float32, (2, 3))
    assert pickle.loads(pickle.dumps(spec)) == spec
    old = ArraySpec((5,), np.float32)
    del old.__dict__["classes"]  # what a spec pickled before the field existed holds
    restored = pickle.loads(pickle.dumps(old))
    assert restored.classes == () and not restored.categorical and restored == ArraySpec((5,), np.float32)


# ----------------------------------------------------------------------------- encoder and decoder

SPACE = {"cat": ArraySpec((5,), np.float32, (2, 3)), "x": ArraySpec((2,), np.float32)}


def _inputs(module):
    """Run-time inputs of `module.mlp`, captured by a forward pre-hook."""
    seen = []
    module.mlp.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    return seen


def test_encoder_takes_a_categorical_key_as_its_one_hot_and_symlogs_the_rest():
    encoder = MultiEncoder(SPACE, EncoderConfig(units=8, layers=1))
    seen = _inputs(encoder)
    onehot = torch.tensor([[0.0, 1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0, 0.0]])
    x = torch.tensor([[3.0, -10.0], [0.0, 0.5]])
    encoder({"cat": onehot, "x": x})
    expected = torch.cat([onehot, ops.symlog(x)], -1)  # keys in sorted order: cat, x
    torch.testing.assert_close(seen[0], expected, rtol=0, atol=0)
    assert not torch.isclose(seen[0][:, :5], ops.symlog(onehot)).all()  # {0, 1}, not {0, ln 2}

    only = MultiEncoder({"cat": SPACE["cat"]}, EncoderConfig(units=8, layers=1))
    seen = _inputs(only)
    only({"cat": onehot})
    torch.testing.assert_close(seen[0], onehot, rtol=0, atol=0)


def _decoder(space, bias):
    """A decoder whose vector output is the constant `bias` (zero weights), whatever the latent."""
    decoder = MultiDecoder(space, DecoderConfig(units=8, layers=1), deter=4, stoch=6)
    with torch.no_grad():
        decoder.vec_out.weight.zero_()
        decoder.vec_out.bias.copy_(torch.tensor(bias))
    return decoder


def test_decoder_cross_entropy_of_a_categorical_key_by_hand():
    # logits: block 0 (2 classes) [1, -1], block 1 (3 classes) [0.5, 0, 2]; then x's two outputs
    decoder = _decoder(SPACE, [1.0, -1.0, 0.5, 0.0, 2.0, 0.3, -0.2])
    dists = decoder(torch.zeros(2, 4), torch.zeros(2, 6))
    assert isinstance(dists["cat"], MultiOneHot) and isinstance(dists["x"], SymlogMSE)
    target = torch.tensor([[0.0, 1.0, 0.0, 0.0, 1.0],   # class 1 of block 0, class 2 of block 1
                           [1.0, 0.0, 0.0, 1.0, 0.0]])  # class 0, class 1
    by_hand = [
        -(-1 - math.log(math.e + math.e ** -1)) - (2 - math.log(math.e ** 0.5 + 1 + math.e ** 2)),
        -(1 - math.log(math.e + math.e ** -1)) - (0 - math.log(math.e ** 0.5 + 1 + math.e ** 2)),
    ]
    torch.testing.assert_close(dists["cat"].loss(target), torch.tensor(by_hand))
    mode = decoder.mode("cat", dists["cat"])  # what `report` shows: each block's most likely class
    assert torch.equal(mode, torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0]] * 2))  # exact one-hots


def test_box_key_keeps_the_symlog_squared_error():
    decoder = _decoder(SPACE, [0.0] * 5 + [0.3, -0.2])
    target = torch.tensor([[3.0, -10.0]])
    loss = decoder(torch.zeros(1, 4), torch.zeros(1, 6))["x"].loss(target)
    by_hand = (0.3 - math.log(4.0)) ** 2 + (-0.2 + math.log(11.0)) ** 2
    torch.testing.assert_close(loss, torch.tensor([by_hand]))
    box = obs_spec_from_gym(spaces.Box(-1, 1, (3,)))["vector"]
    assert box.classes == () and not box.categorical


def test_categorical_loss_reaches_its_head_only():
    decoder = MultiDecoder(SPACE, DecoderConfig(units=8, layers=1), deter=4, stoch=6)
    dists = decoder(torch.randn(3, 4), torch.randn(3, 6))
    target = torch.eye(2)[[0, 1, 1]]
    target = torch.cat([target, torch.eye(3)[[2, 0, 1]]], -1)
    dists["cat"].loss(target).sum().backward()
    grad = decoder.vec_out.weight.grad  # (out, in): rows 0-4 are cat's logits, rows 5-6 x's outputs
    assert grad[:5].abs().sum(1).min() > 0  # every logit row of the categorical head
    assert grad[5:].abs().sum() == 0
    assert decoder.vec_out.bias.grad[:5].abs().min() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.mlp.parameters())


# ----------------------------------------------------------------------------- the agent


def _agent(env_fn):
    cfg = C.make_config(C.compose_presets(["debug"]), [])
    env = make_env(env_fn, cfg.env)
    return DreamerAgent(env.obs_space, env.act_space, cfg), env, cfg


def _batch(env, cfg, seed=0):
    rng = np.random.default_rng(seed)
    rows, step = [], env.reset()
    for _ in range(cfg.batch_size * cfg.batch_length):
        action = env.act_space.sample_random(rng, 1)[0]
        rows.append({**step, "action": action})
        step = env.reset() if step["is_last"] else env.step(action)
    return {k: np.stack([r[k] for r in rows]).reshape(cfg.batch_size, cfg.batch_length, *rows[0][k].shape)
            for k in rows[0]}


def test_world_model_rec_loss_is_the_sum_of_cross_entropy_and_symlog_terms():
    agent, env, cfg = _agent(lambda: DiscreteObsEnv())
    data = agent.to_tensors(_batch(env, cfg))
    losses, post, _ = agent.wm.loss(data, agent.wm.initial(cfg.batch_size))
    deter, stoch = post["deter"].flatten(0, 1), post["stoch"].flatten(0, 1).flatten(-2)
    flat = agent.wm.decoder.vec_out(agent.wm.decoder.mlp(torch.cat([deter, stoch], -1)))
    parts = dict(zip(agent.wm.decoder.mlp_keys, flat.split([3 + 4, 2, 1], -1)))  # sorted: cell, cue, time
    expected = 0
    for key, blocks in (("cell", (3, 4)), ("cue", (2,))):
        for logits, onehot in zip(parts[key].split(blocks, -1), data[key].flatten(0, 1).split(blocks, -1)):
            expected = expected - (torch.log_softmax(logits, -1) * onehot).sum(-1)
    expected = expected + (parts["time"] - ops.symlog(data["time"].flatten(0, 1))).square().sum(-1)
    torch.testing.assert_close(losses["rec"].flatten(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bare", [False, True])
def test_agent_update_and_report_on_discrete_observations(bare):
    agent, env, cfg = _agent(lambda: DiscreteObsEnv(bare=bare))
    keys = ["vector"] if bare else ["cell", "cue", "time"]
    assert agent.wm.decoder.mlp_keys == keys
    assert set(agent.wm.decoder.classes) == ({"vector"} if bare else {"cell", "cue"})
    batch = _batch(env, cfg)
    before = agent.wm.decoder.vec_out.weight.detach().clone()
    for seed in range(2):  # the output layer starts at its init, so update twice
        metrics = agent.train_step(_batch(env, cfg, seed))
        assert all(torch.isfinite(v) for v in metrics.values())
        assert metrics["train/nonfinite"] == 0 and metrics["loss/rec"] > 0
    assert not torch.equal(agent.wm.decoder.vec_out.weight, before)

    state = agent.init_state(2)
    obs = {k: np.stack([v] * 2) for k, v in env.reset().items()}
    _, action, _ = agent.act(state, obs, "train")
    assert action.shape == (2, 2)

    report = agent.report(batch)
    for key in keys:
        pred = report[f"openloop/{key}/pred"]
        assert pred.shape == batch[key].shape and torch.isfinite(report[f"openloop/{key}/mse"])
    for key, blocks in agent.wm.decoder.classes.items():  # decoded as the mode: one 1 per block
        for block in report[f"openloop/{key}/pred"].split(blocks, -1):
            assert torch.equal(block.sum(-1), torch.ones(block.shape[:-1]))
