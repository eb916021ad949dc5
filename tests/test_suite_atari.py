"""Atari suite: `atari:<game>` observations and actions, sticky actions, frame max-pooling, no-op
starts, no double action repeat through the adapter, raw rewards, errors, and a short training run."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ale_py", reason="ale-py is not installed: pip install 'reverie[atari]'")
pytest.importorskip("cv2", reason="opencv-python-headless is not installed: pip install 'reverie[atari]'")

import gymnasium as gym  # noqa: E402

import reverie  # noqa: E402
from reverie.config import EnvConfig  # noqa: E402
from reverie.envs import make_env  # noqa: E402
from reverie.envs.suites import atari  # noqa: E402
from reverie.errors import EnvError  # noqa: E402
from reverie.logging import read_metrics  # noqa: E402


def one_hot(index: int, size: int) -> np.ndarray:
    vec = np.zeros(size, np.float32)
    vec[index] = 1.0
    return vec


def test_rgb_64_observation_and_minimal_action_set():
    env = make_env("atari:pong", EnvConfig(action_repeat=4, size=(64, 64)))
    assert set(env.obs_space) == {"image"}
    assert env.obs_space["image"].shape == (64, 64, 3) and env.obs_space["image"].dtype == np.uint8
    image = env.reset()["image"]
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert image.std() > 0  # the game screen, not a blank frame
    assert env.act_space.kind == "discrete" and env.act_space.dim == 6  # Pong's minimal action set
    step = env.step(one_hot(0, 6))
    assert step["image"].shape == (64, 64, 3) and step["reward"].dtype == np.float32
    env.close()


def test_grey_96_observation_has_one_channel():
    env = make_env("atari:pong", EnvConfig(action_repeat=4, size=(96, 96), gray=True))
    assert env.obs_space["image"].shape == (96, 96, 1)
    image = env.reset()["image"]
    assert image.shape == (96, 96, 1) and image.dtype == np.uint8
    assert env.step(one_hot(1, 6))["image"].shape == (96, 96, 1)
    env.close()


def test_size_is_height_then_width():
    env = make_env("atari:pong", EnvConfig(size=(84, 48)))
    assert env.reset()["image"].shape == (84, 48, 3)
    env.close()


def test_full_action_set_has_18_actions():
    env = make_env("atari:pong", EnvConfig(full_actions=True))
    assert env.act_space.dim == 18
    env.close()


def test_ms_pacman_snake_case_name_and_raw_rewards():
    env = make_env("atari:ms_pacman", EnvConfig(action_repeat=4, size=(64, 64)), seed=0)
    env.reset()
    rng = np.random.default_rng(0)
    rewards = [float(env.step(one_hot(rng.integers(env.act_space.dim), env.act_space.dim))["reward"])
               for _ in range(150)]
    assert max(rewards) >= 10  # a pellet is worth 10 points: rewards are not clipped
    env.close()


def test_sticky_actions_and_frame_cap_reach_the_ale():
    sticky = make_env("atari:pong", EnvConfig(sticky=True))
    plain = make_env("atari:pong", EnvConfig(sticky=False))
    assert sticky.env.unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    assert plain.env.unwrapped.ale.getFloat("repeat_action_probability") == 0.0
    assert plain.env.unwrapped.ale.getInt("max_num_frames_per_episode") == 108_000
    sticky.close(), plain.close()


def test_frames_are_max_pooled_over_the_last_two_frames_of_a_step():
    # Full-size frames (no resize), so the image is exactly the pooled screen.
    env = atari.build("pong", EnvConfig(action_repeat=4, size=(210, 160), noops=0), seed=3)
    raw = gym.make("ALE/Pong-v5", frameskip=1, repeat_action_probability=0.0)
    obs, _ = env.reset(seed=3)
    raw_frame, _ = raw.reset(seed=3)
    np.testing.assert_array_equal(obs["image"], raw_frame)
    rng = np.random.default_rng(0)
    differs = 0
    for _ in range(40):
        action = int(rng.integers(6))
        obs, reward, *_ = env.step(action)
        frames, raw_reward = [], 0.0
        for _ in range(4):
            frame, r, *_ = raw.step(action)
            frames.append(frame)
            raw_reward += r
        np.testing.assert_array_equal(obs["image"], np.maximum(frames[-2], frames[-1]))
        assert reward == raw_reward
        differs += int(not np.array_equal(obs["image"], frames[-1]))
    assert differs > 0  # pooling changed the image (the ball and paddles move between frames)
    env.close(), raw.close()


def test_adapter_does_not_repeat_actions_again():
    env = make_env("atari:pong", EnvConfig(action_repeat=4, noops=0))
    env.reset()
    ale = env.env.unwrapped.ale
    start = ale.getEpisodeFrameNumber()
    env.step(one_hot(0, 6))
    assert ale.getEpisodeFrameNumber() - start == 4
    env.step(one_hot(0, 6))
    assert ale.getEpisodeFrameNumber() - start == 8
    env.close()


def test_noop_starts_are_seeded_and_bounded():
    env = atari.build("pong", EnvConfig(noops=30), seed=0)

    def start_frames(seed: int | None) -> int:
        env.reset(seed=seed)
        return env.ale.getEpisodeFrameNumber()

    counts = [start_frames(seed) for seed in range(8)]
    assert all(0 <= n <= 30 for n in counts)
    assert len(set(counts)) > 1  # random, not a fixed number of no-ops
    assert start_frames(5) == counts[5]  # the same seed gives the same no-ops
    assert len({start_frames(None) for _ in range(8)}) > 1  # unseeded resets continue the RNG
    env.close()
    env = make_env("atari:pong", EnvConfig(noops=0))
    env.reset()
    assert env.env.unwrapped.ale.getEpisodeFrameNumber() == 0
    env.close()


def test_losing_a_life_does_not_end_the_episode():
    env = make_env("atari:breakout", EnvConfig(action_repeat=4, size=(64, 64)), seed=0)
    env.reset()
    ale = env.env.unwrapped.ale
    lives = ale.lives()
    rng = np.random.default_rng(0)
    for _ in range(1000):
        step = env.step(one_hot(rng.integers(4), 4))
        if ale.lives() < lives:
            break
    assert ale.lives() < lives, "no life lost in 1000 random steps"
    assert not step["is_last"] and not step["is_terminal"]
    env.close()


def test_unknown_game_names_the_closest_one():
    with pytest.raises(EnvError, match="unknown Atari game 'pongg'; did you mean 'atari:pong'"):
        make_env("atari:pongg")
    with pytest.raises(EnvError, match="did you mean 'atari:ms_pacman'"):
        make_env("atari:mspacman")


def test_atari100k_trains_and_writes_metrics(tmp_path):
    result = reverie.train(
        "atari:pong", logdir=tmp_path, presets=["atari100k", "debug"], steps=200, progress=False,
        overrides={"run.prefill": 100, "run.train_ratio": 16, "run.eval_every": 0, "run.log_every": 1,
                   "run.report_every": 0, "run.threads": 1, "model.encoder.depth": 4, "model.decoder.depth": 4},
    )
    assert result["updates"] > 0
    assert (tmp_path / "metrics.jsonl").exists()
    rows = read_metrics(tmp_path)
    assert any("loss/rec" in row for row in rows)


def test_muzero_trains_on_atari_frames_through_its_residual_cnn(tmp_path):
    result = reverie.train(
        "atari:pong", logdir=tmp_path, presets=["atari100k", "muzero"], steps=120, progress=False,
        overrides={"batch_size": 4, "run.train_ratio": 44, "env.num_envs": 1, "env.eval_envs": 1,
                   "run.eval_episodes": 1, "run.eval_final": False, "run.eval_every": 0, "run.log_every": 1,
                   "run.report_every": 0, "run.threads": 1, "muzero.simulations": 2, "muzero.mlp_dim": 16,
                   "muzero.latent_dim": 16, "muzero.cnn_depth": 4, "muzero.projection_dim": 16},
    )
    assert result["updates"] > 0
    rows = read_metrics(tmp_path)
    assert any("loss/consistency" in row and np.isfinite(row["loss/value"]) for row in rows)
