"""Per-episode `log/` statistics: achievement success rates, the Crafter score, other log means,
their checkpoint state; and report batches that leave the training sample stream alone."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reverie.replay import Replay
from reverie.run.episode_logs import EpisodeLogStats, crafter_score, split_log_keys


def test_split_log_keys_separates_model_data_from_logs():
    step = {"image": np.zeros(2), "reward": np.ones(2), "log/achievement_eat": np.ones(2), "log/depth": np.zeros(2)}
    data, logs = split_log_keys(step)
    assert set(data) == {"image", "reward"}
    assert set(logs) == {"achievement_eat", "depth"}


def test_crafter_score_is_the_geometric_mean_of_one_plus_success_rates():
    assert crafter_score([0.0] * 22) == pytest.approx(0.0)
    assert crafter_score([100.0] * 22) == pytest.approx(100.0)
    # [0, 99]: exp((ln 1 + ln 100) / 2) − 1 = sqrt(100) − 1 = 9
    assert crafter_score([0.0, 99.0]) == pytest.approx(9.0)
    # [1, 3, 7]: exp((ln 2 + ln 4 + ln 8) / 3) − 1 = 64^(1/3) − 1 = 3
    assert crafter_score([1.0, 3.0, 7.0]) == pytest.approx(3.0)
    assert crafter_score([]) == 0.0


def test_success_rates_count_episodes_that_unlocked_each_achievement():
    stats = EpisodeLogStats()
    # 2 envs; only env 1 ends at the first step, both end at the second
    stats.add({"achievement_eat": np.float32([1, 1]), "achievement_drink": np.float32([0, 0]),
               "depth": np.float32([3, 5])}, np.array([False, True]))
    stats.add({"achievement_eat": np.float32([0, 1]), "achievement_drink": np.float32([1, 0]),
               "depth": np.float32([1, 0])}, np.array([True, True]))
    assert stats.episodes == 3
    assert stats.success_rates() == {"drink": pytest.approx(100 / 3), "eat": pytest.approx(200 / 3)}
    row = stats.summary(window_had_episodes=True)
    assert row["episode/depth"] == pytest.approx((5 + 1 + 0) / 3)
    expected = math.exp((math.log1p(100 / 3) + math.log1p(200 / 3)) / 2) - 1
    assert row["achievements/score"] == pytest.approx(expected)
    assert "episode/depth" not in stats.summary(window_had_episodes=False)  # the window was emptied


def test_episode_log_totals_survive_a_checkpoint_round_trip():
    stats = EpisodeLogStats()
    stats.add({"achievement_eat": np.float32([1])}, np.array([True]))
    restored = EpisodeLogStats()
    restored.load_state_dict(stats.state_dict())
    restored.add({"achievement_eat": np.float32([0])}, np.array([True]))
    assert restored.success_rates() == {"eat": 50.0}


def test_sample_uniform_does_not_disturb_the_training_stream():
    def filled() -> Replay:
        replay = Replay(capacity=200, batch_size=4, batch_length=8, num_envs=1, online=True, seed=0)
        for t in range(100):
            replay.add({"x": np.array([[t]], np.float32), "is_first": np.array([t == 0])})
        return replay

    plain, probed = filled(), filled()
    report = probed.sample_uniform(3, np.random.default_rng(5))
    assert report["x"].shape == (3, 8, 1)
    assert (np.diff(report["x"][..., 0], axis=1) == 1).all()  # consecutive steps
    for _ in range(5):
        np.testing.assert_array_equal(plain.sample()["x"], probed.sample()["x"])
