"""The replay context (`replay.context`, official `replay_context: 1`): a replayed sequence starts
from the latent stored at the step before it, the update writes its recomputed latents back, the
written-back latents survive a resume, and a skipped update writes back nothing new."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_agent import make_agent
from toy_envs import CueEnv

import reverie
from reverie import config as C
from reverie.agents import WRITE_BACK_PREFIX
from reverie.agents.dreamer import replay_context
from reverie.errors import ConfigError
from reverie.replay import Replay, ReplayStore
from reverie.run.train import Trainer

CONTEXT = ["replay.context=1"]
FAST = {"run.prefill": 100, "run.train_ratio": 16, "run.eval_every": 0, "run.report_every": 0,
        "replay.chunk_length": 50, "run.threads": 1, "run.log_every": 0, "replay.context": 1}


def context_batch(agent, env, cfg, seed=0):
    """A (B, 1 + T) batch of real env steps with the latents the policy stored while acting."""
    rng = np.random.default_rng(seed)
    B, T = cfg.batch_size, 1 + cfg.batch_length
    rows, state = [], agent.init_state(1)
    step = env.reset()
    for _ in range(B * T):
        obs = {k: v[None] for k, v in step.items()}
        state, _, extras = agent.act(state, obs, "train")
        action = env.act_space.sample_random(rng, 1)[0]
        rows.append({**step, "action": action, **{k: v[0] for k, v in extras.items()}})
        step = env.reset() if step["is_last"] else env.step(action)
    return {k: np.stack([r[k] for r in rows]).reshape(B, T, *np.shape(rows[0][k])) for k in rows[0]}


def test_replay_write_back_overwrites_only_steps_still_stored():
    replay = Replay(capacity=6, batch_size=2, batch_length=3, online=False)
    for t in range(8):  # times 2..7 stored
        replay.add({"x": np.array([float(t)])})
    replay.write_back(np.array([0, 0]), np.array([1, 5]), {"x": np.array([[10.0, 20.0], [30.0, 40.0]])})
    # time 1 is gone (skipped), time 2 → 20; times 5, 6 → 30, 40
    np.testing.assert_array_equal(replay.export_steps(2, 8)["x"][0], [20.0, 3.0, 4.0, 30.0, 40.0, 7.0])
    batch, env, start = replay.sample_windows()
    np.testing.assert_array_equal(batch["x"][:, 0], replay.export_steps(2, 8)["x"][0][start - 2])
    with pytest.raises(KeyError, match="no key 'y'"):
        replay.write_back(env, start, {"y": np.zeros((2, 1))})


def test_stored_latents_round_trip_exactly_for_categorical_and_gaussian_latents():
    for presets in (["debug"], ["dreamerv1", "debug"]):
        cfg = C.make_config(C.compose_presets(presets), CONTEXT)
        agent, _, _ = make_agent(lambda: CueEnv(), [f"model.rssm.latent={cfg.model.rssm.latent}", *CONTEXT])
        rssm = agent.wm.rssm
        state = rssm.initial(4)
        state = {"deter": torch.rand(4, rssm.cfg.deter).mul(2).sub(1), "stoch": rssm.latent(torch.randn(4, *rssm.params_shape))}
        stored = replay_context.encode(rssm, state)
        for key, field in agent.replay_fields.items():
            assert stored[key].shape == (4, *field.shape) and stored[key].numpy().dtype == field.dtype
        back = replay_context.decode(rssm, stored)
        torch.testing.assert_close(back["stoch"], state["stoch"].float().detach(), atol=1e-3, rtol=1e-3)
        torch.testing.assert_close(back["deter"], state["deter"], atol=1e-3, rtol=0)  # float16


def test_a_sequence_that_starts_mid_episode_starts_from_the_stored_latent():
    agent, env, cfg = make_agent(lambda: CueEnv(), CONTEXT)
    data = agent.to_tensors(context_batch(agent, env, cfg))
    data["is_first"][:, 1] = False  # every trained sequence starts mid-episode
    data["latent/valid"][0, 0] = False  # …but row 0 stored no latent at its context step (prefill)
    _, metrics = agent.compute_losses(data)
    rssm = agent.wm.rssm
    carry = replay_context.decode(rssm, {k: data[k][:, 0] for k in replay_context.KEYS})
    initial = agent.wm.initial(cfg.batch_size)
    carry["deter"][0], carry["stoch"][0] = initial["deter"][0], initial["stoch"][0]
    action = data["action"][:, 0].float()
    action[0] = 0.0
    expected = rssm.core(carry["deter"], carry["stoch"], action)  # h_1 = f(h_0, z_0, a_0), no sampling
    written = metrics[WRITE_BACK_PREFIX + "latent/deter"]  # (B, T, D) float16
    assert written.shape == (cfg.batch_size, cfg.batch_length, cfg.model.rssm.deter)
    torch.testing.assert_close(written[:, 0].float(), expected, atol=2e-3, rtol=0)
    # and it matters: from zeros the first step's h differs where a latent was stored
    from_zeros = rssm.core(initial["deter"], initial["stoch"], torch.zeros_like(action))
    assert (written[1:, 0].float() - from_zeros[1:]).abs().max() > 1e-2


def test_written_back_latents_equal_a_recomputation_and_a_skipped_update_keeps_the_stored_ones():
    agent, env, cfg = make_agent(lambda: CueEnv(), CONTEXT)
    batch = context_batch(agent, env, cfg)
    torch.manual_seed(3)
    with torch.no_grad():
        _, expected = agent.compute_losses(agent.to_tensors(batch))
    torch.manual_seed(3)
    metrics = agent.train_step(batch)
    for key in replay_context.KEYS:
        torch.testing.assert_close(metrics[WRITE_BACK_PREFIX + key], expected[WRITE_BACK_PREFIX + key])
    assert bool(metrics[WRITE_BACK_PREFIX + "latent/valid"].all())

    broken = {**batch, "reward": batch["reward"].copy()}
    broken["reward"][0, 3] = np.nan
    metrics = agent.train_step(broken)
    assert metrics["train/nonfinite"] == 1
    for key in replay_context.KEYS:
        np.testing.assert_array_equal(metrics[WRITE_BACK_PREFIX + key].numpy(), batch[key][:, 1:])


def test_the_loop_writes_latents_back_and_a_resume_keeps_them(tmp_path):
    logdir = tmp_path / "run"
    reverie.train("CartPole-v1", logdir=logdir, presets=["debug"], steps=300, overrides=FAST, progress=False)
    with np.load(logdir / "replay" / "written_back.npz") as saved:
        start, written = int(saved["start"]), {k: saved[k] for k in replay_context.KEYS}
    chunks = ReplayStore(logdir / "replay", Replay(10_000, 4, 17)).chunks()  # as the policy stored them
    as_acted = np.concatenate([np.load(chunk.path)["latent/deter"] for chunk in chunks], axis=1)  # (N, n, D)
    assert start == 0 and written["latent/deter"].shape[1] == 300
    changed = np.abs(written["latent/deter"].astype(np.float32) - as_acted.astype(np.float32)).max(-1)  # (N, n)
    assert (changed > 1e-3).mean() > 0.5  # most stored latents were recomputed by the updates
    acted_valid = np.concatenate([np.load(chunk.path)["latent/valid"] for chunk in chunks], axis=1)  # (N, n)
    assert not acted_valid[0, :100].any() and acted_valid[0, 100:].all()  # the random prefill stores none
    assert not written["latent/valid"][0, 0] and written["latent/valid"][0, 1:].mean() > 0.9  # recomputed

    cfg = C.make_config(C.compose_presets(["debug"]), {**FAST, "logdir": str(logdir), "env.id": "CartPole-v1"})
    trainer = Trainer(cfg, progress=False)
    try:
        assert trainer.restore()
        resumed = trainer.replay.export_steps(0, 300)
        for key in replay_context.KEYS:
            np.testing.assert_array_equal(resumed[key], written[key])
        assert trainer.replay.batch_length == 1 + cfg.batch_length
    finally:
        trainer.close()


def test_a_negative_context_is_refused():
    with pytest.raises(ConfigError, match="replay.context must be ≥ 0"):
        C.make_config(C.compose_presets(["debug"]), ["replay.context=-1"])
