"""Tests for reverie.replay: stored values, windows, FIFO overwrite, online queue, state, sizes.

Most tests store the per-env step index `t` and the env id as values, so a sampled window can be
checked by hand: its `t` row must be a consecutive range and its `env` row constant.
"""

from __future__ import annotations

import collections
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reverie.errors import CheckpointError, ConfigError, UserError
from reverie.replay import Replay


def make_step(t: int, num_envs: int, episode_length: int = 1_000_000) -> dict[str, np.ndarray]:
    """One vector-env step whose values encode (env, t): shapes (N, ...)."""
    envs = np.arange(num_envs)
    return {
        "t": np.full(num_envs, t, np.int64),  # (N,)
        "env": envs.astype(np.int32),  # (N,)
        "vector": np.stack([np.full(3, 1000 * e + t, np.float32) for e in envs]),  # (N, 3)
        "is_first": np.full(num_envs, t % episode_length == 0),  # (N,)
    }


def fill(replay: Replay, num_steps: int, start: int = 0, episode_length: int = 1_000_000) -> None:
    for t in range(start, start + num_steps):
        replay.add(make_step(t, replay.num_envs, episode_length))


def window_ids(batch: dict[str, np.ndarray]) -> list[tuple[int, int]]:
    """(env, start t) of each row of a batch."""
    return [(int(e), int(t)) for e, t in zip(batch["env"][:, 0], batch["t"][:, 0])]


def assert_windows_valid(batch: dict[str, np.ndarray], newest: int, oldest: int) -> None:
    """Every row: one env, consecutive t, all t within the stored range [oldest, newest]."""
    length = batch["t"].shape[1]
    starts = batch["t"][:, :1]  # (B, 1)
    np.testing.assert_array_equal(batch["t"], starts + np.arange(length))
    np.testing.assert_array_equal(batch["env"], np.broadcast_to(batch["env"][:, :1], batch["env"].shape))
    assert batch["t"].min() >= oldest and batch["t"].max() <= newest


def test_windows_hold_exactly_the_stored_consecutive_steps():
    replay = Replay(capacity=100, batch_size=8, batch_length=5, online=False)
    fill(replay, 20)
    batch = replay.sample()
    assert batch["t"].shape == (8, 5) and batch["vector"].shape == (8, 5, 3)
    for row_t, row_vec in zip(batch["t"], batch["vector"]):
        start = row_t[0]
        assert 0 <= start <= 15  # 20 steps, length 5: starts 0..15
        np.testing.assert_array_equal(row_t, np.arange(start, start + 5))
        np.testing.assert_array_equal(row_vec, np.repeat(row_t[:, None], 3, axis=1).astype(np.float32))


def test_sequences_run_across_episode_boundaries():
    replay = Replay(capacity=100, batch_size=16, batch_length=5, online=False)
    fill(replay, 30, episode_length=3)  # is_first at t = 0, 3, 6, ...
    batch = replay.sample()
    np.testing.assert_array_equal(batch["is_first"], batch["t"] % 3 == 0)
    # With length 5 and episodes of 3, every window has an episode start after its first step.
    assert batch["is_first"][:, 1:].any(axis=1).all()


def test_windows_never_mix_envs_and_cover_every_env():
    replay = Replay(capacity=90, batch_size=64, batch_length=4, num_envs=3, online=False)
    fill(replay, 12)
    batch = replay.sample()
    assert_windows_valid(batch, newest=11, oldest=0)
    np.testing.assert_array_equal(batch["vector"][..., 0], 1000 * batch["env"] + batch["t"])
    assert set(batch["env"][:, 0].tolist()) == {0, 1, 2}


def test_fifo_overwrite_keeps_newest_steps_and_windows_never_cross_the_write_head():
    replay = Replay(capacity=20, batch_size=200, batch_length=4, num_envs=2, online=False)
    fill(replay, 25)  # 10 slots per env: steps 15..24 remain, the write head sits between 24 and 15
    assert len(replay) == 20
    stored = np.sort(replay.state_dict()["data"]["t"], axis=1)  # (2, 10)
    np.testing.assert_array_equal(stored, np.tile(np.arange(15, 25), (2, 1)))
    starts = set()
    for _ in range(5):
        batch = replay.sample()
        assert_windows_valid(batch, newest=24, oldest=15)
        starts |= set(batch["t"][:, 0].tolist())
    assert starts == set(range(15, 22))  # 10 stored - 4 + 1 = 7 valid starts


def test_uniform_sampling_covers_every_valid_window_about_equally():
    replay = Replay(capacity=20, batch_size=500, batch_length=4, num_envs=2, online=False, seed=3)
    fill(replay, 15)  # per env: steps 5..14 stored, starts 5..11 valid -> 14 windows over both envs
    counts: collections.Counter = collections.Counter()
    for _ in range(40):
        counts.update(window_ids(replay.sample()))
    expected_windows = {(env, start) for env in (0, 1) for start in range(5, 12)}
    assert set(counts) == expected_windows
    expected = 40 * 500 / 14  # ~1429 draws each; binomial std ~37, bound is ~5.8 std
    for window, count in counts.items():
        assert abs(count - expected) < 0.15 * expected, (window, count)


def test_online_queue_serves_each_fresh_window_once_in_order_then_uniform():
    replay = Replay(capacity=60, batch_size=4, batch_length=3, num_envs=2, online=True)
    fill(replay, 6)
    assert replay.queue_length == 4
    assert window_ids(replay.sample()) == [(0, 0), (1, 0), (0, 3), (1, 3)]
    assert replay.queue_length == 0
    fill(replay, 3, start=6)  # one more window per env: starts 6
    batch = replay.sample()
    assert window_ids(batch)[:2] == [(0, 6), (1, 6)]
    assert_windows_valid(batch, newest=8, oldest=0)  # the other two rows are uniform
    fill(replay, 2, start=9)  # 2 < batch_length new steps: nothing queued yet
    assert replay.queue_length == 0


def test_online_queue_skips_overwritten_windows_and_keeps_only_what_fits():
    replay = Replay(capacity=6, batch_size=2, batch_length=3, online=True, seed=1)
    fill(replay, 7)  # queued starts 0 and 3; step 6 overwrote step 0, so start 0 is stale
    batch = replay.sample()
    assert window_ids(batch)[0] == (0, 3)
    assert 1 <= batch["t"][1, 0] <= 4  # uniform row over stored steps 1..6
    assert replay.queue_length == 0

    bounded = Replay(capacity=6, batch_size=2, batch_length=3, online=True)
    fill(bounded, 30)  # 10 windows pushed, room for 6 // 3 = 2
    assert bounded.queue_length == 2
    assert window_ids(bounded.sample()) == [(0, 24), (0, 27)]


def test_offline_replay_has_no_queue():
    replay = Replay(capacity=60, batch_size=4, batch_length=3, online=False)
    fill(replay, 30)
    assert replay.queue_length == 0


def test_dtypes_and_shapes_are_preserved():
    replay = Replay(capacity=50, batch_size=3, batch_length=4, num_envs=2)
    rng = np.random.default_rng(0)
    for _ in range(6):
        replay.add({
            "image": rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8),
            "action": rng.standard_normal((2, 2)).astype(np.float32),
            "reward": np.zeros(2, np.float32),
            "is_first": np.zeros(2, bool),
            "is_last": np.zeros(2, bool),
            "is_terminal": np.zeros(2, bool),
        })
    batch = replay.sample()
    assert batch["image"].dtype == np.uint8 and batch["image"].shape == (3, 4, 8, 8, 3)
    assert batch["action"].dtype == np.float32 and batch["action"].shape == (3, 4, 2)
    assert batch["reward"].dtype == np.float32 and batch["reward"].shape == (3, 4)
    for key in ("is_first", "is_last", "is_terminal"):
        assert batch[key].dtype == np.bool_ and batch[key].shape == (3, 4)


def test_sample_returns_copies_not_views_of_storage():
    replay = Replay(capacity=20, batch_size=4, batch_length=3, online=False)
    fill(replay, 10)
    batch = replay.sample()
    batch["t"][:] = -1
    assert replay.state_dict()["data"]["t"].min() == 0


def test_same_seed_and_adds_give_identical_samples_and_other_seeds_differ():
    def run(seed: int) -> list[np.ndarray]:
        replay = Replay(capacity=40, batch_size=8, batch_length=3, num_envs=2, seed=seed)
        out = []
        for chunk in range(4):
            fill(replay, 5, start=5 * chunk)
            out.append(replay.sample()["vector"])
        return out

    first, second, other = run(7), run(7), run(8)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(first, other))


def test_state_dict_round_trip_continues_exactly():
    original = Replay(capacity=30, batch_size=4, batch_length=3, num_envs=2, seed=5)
    fill(original, 20)
    original.sample()  # consume part of the queue and advance the RNG
    fill(original, 4, start=20)  # leaves a fresh window queued
    assert original.queue_length > 0
    state = pickle.loads(pickle.dumps(original.state_dict()))  # as a checkpoint file would

    resumed = Replay(capacity=30, batch_size=4, batch_length=3, num_envs=2, seed=999)
    resumed.load_state_dict(state)
    assert len(resumed) == len(original) and resumed.queue_length == original.queue_length
    for chunk in range(5):
        a, b = original.sample(), resumed.sample()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
        fill(original, 3, start=24 + 3 * chunk)
        fill(resumed, 3, start=24 + 3 * chunk)


def test_load_state_dict_copies_storage():
    original = Replay(capacity=20, batch_size=2, batch_length=3, online=False)
    fill(original, 5)
    resumed = Replay(capacity=20, batch_size=2, batch_length=3, online=False)
    resumed.load_state_dict(original.state_dict())
    fill(original, 10, start=100)  # must not leak into `resumed`
    assert resumed.state_dict()["data"]["t"].max() == 4


def test_state_dict_data_is_in_time_order_and_optional():
    replay = Replay(capacity=10, batch_size=2, batch_length=3, num_envs=2)
    fill(replay, 23)  # the ring has wrapped: slots hold t = 20, 21, 22, 13, ..., 19
    state = replay.state_dict()
    np.testing.assert_array_equal(state["data"]["t"], np.tile(np.arange(18, 23), (2, 1)))
    assert "data" not in replay.state_dict(with_data=False)
    resumed = Replay(capacity=10, batch_size=2, batch_length=3, num_envs=2)
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(resumed.export_steps(18, 23)["t"], state["data"]["t"])
    with pytest.raises(ValueError, match=r"steps \[10, 23\) are not stored: the replay holds \[18, 23\)"):
        resumed.export_steps(10, 23)


def test_prepend_steps_fills_older_steps_up_to_the_capacity():
    source = Replay(capacity=8, batch_size=2, batch_length=3)
    fill(source, 30)
    target = Replay(capacity=8, batch_size=2, batch_length=3)
    target.load_state_dict({**source.state_dict(with_data=False), "data": source.export_steps(26, 30)})
    older = {key: np.concatenate([value[:, :1]] * 6, axis=1) for key, value in source.export_steps(26, 27).items()}
    assert target.prepend_steps(older) == 4  # 4 stored + 4 more fill the 8 slots
    assert len(target) == 8 and target.prepend_steps(older) == 0


def test_load_state_dict_rejects_another_layout():
    source = Replay(capacity=20, batch_size=2, batch_length=3)
    fill(source, 5)
    target = Replay(capacity=40, batch_size=2, batch_length=3)
    with pytest.raises(CheckpointError, match="per_env_capacity=20 but this run has 40"):
        target.load_state_dict(source.state_dict())


def test_bytes_per_step_and_describe_for_a_known_spec():
    spec = {
        "image": ((64, 64, 3), np.dtype(np.uint8)),  # 12,288 B
        "vector": ((5,), np.dtype(np.float32)),  # 20 B
        "action": ((2,), np.dtype(np.float32)),  # 8 B
        "reward": ((), np.dtype(np.float32)),  # 4 B
        "is_first": ((), np.dtype(bool)),  # 1 B each for the three flags
        "is_last": ((), np.dtype(bool)),
        "is_terminal": ((), np.dtype(bool)),
    }
    assert Replay.estimate_bytes(spec, 1) == 12_323
    assert Replay.estimate_bytes(spec, 1_000_000) == 12_323_000_000

    replay = Replay(capacity=1000, batch_size=2, batch_length=3)
    assert replay.describe() == "replay: capacity 1,000 steps (allocated on the first step)"
    assert replay.bytes_per_step == 0
    replay.add({key: np.zeros((1, *shape), dtype) for key, (shape, dtype) in spec.items()})
    assert replay.bytes_per_step == 12_323
    # 12,323,000 B / 1,048,576 = 11.752 MiB
    assert replay.describe() == "replay: capacity 1,000 steps × 12,323 B/step = 11.75 MiB (RAM)"


def test_capacity_is_split_evenly_per_env():
    replay = Replay(capacity=10, batch_size=2, batch_length=2, num_envs=3)
    assert replay.per_env_capacity == 3 and replay.capacity == 9
    fill(replay, 5)
    assert len(replay) == 9
    # t int64 8 B + env int32 4 B + vector 3 float32 12 B + is_first 1 B = 25 B; 9 × 25 = 225 B
    assert replay.bytes_per_step == 25
    assert replay.describe() == "replay: capacity 9 steps × 25 B/step = 225 B (RAM)"


def test_ready_and_clear_error_before_enough_data():
    replay = Replay(capacity=100, batch_size=2, batch_length=5, num_envs=2)
    assert not replay.ready and len(replay) == 0
    with pytest.raises(RuntimeError, match="has 0 steps per env but needs batch_length=5"):
        replay.sample()
    fill(replay, 4)
    assert not replay.ready and len(replay) == 8
    with pytest.raises(RuntimeError, match="has 4 steps per env"):
        replay.sample()
    fill(replay, 1, start=4)
    assert replay.ready
    assert replay.sample()["t"].shape == (2, 5)


def test_invalid_configuration_and_steps_raise_user_errors():
    with pytest.raises(ConfigError, match="set replay.capacity to at least 20"):
        Replay(capacity=15, batch_size=2, batch_length=5, num_envs=4)
    with pytest.raises(ConfigError, match="batch_length must be a positive integer"):
        Replay(capacity=15, batch_size=2, batch_length=0)
    replay = Replay(capacity=20, batch_size=2, batch_length=3, num_envs=2)
    with pytest.raises(UserError, match="leading dim must be num_envs=2"):
        replay.add({"x": np.zeros((3, 4))})
    replay.add({"x": np.zeros((2, 4))})
    with pytest.raises(UserError, match="keys \\['x', 'y'\\] differ"):
        replay.add({"x": np.zeros((2, 4)), "y": np.zeros(2)})
    with pytest.raises(UserError, match="'x' has shape \\(2, 5\\), expected \\(2, 4\\)"):
        replay.add({"x": np.zeros((2, 5))})


@settings(max_examples=60, deadline=None)
@given(
    num_envs=st.integers(1, 4),
    per_env_capacity=st.integers(1, 12),
    batch_length=st.integers(1, 6),
    batch_size=st.integers(1, 9),
    num_steps=st.integers(0, 40),
    online=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_every_window_is_consecutive_within_one_env(
    num_envs, per_env_capacity, batch_length, batch_size, num_steps, online, seed
):
    per_env_capacity = max(per_env_capacity, batch_length)
    replay = Replay(
        capacity=num_envs * per_env_capacity, batch_size=batch_size, batch_length=batch_length,
        num_envs=num_envs, online=online, seed=seed,
    )
    for t in range(num_steps):
        replay.add(make_step(t, num_envs))
        if replay.ready and t % 3 == 0:
            batch = replay.sample()
            assert batch["t"].shape == (batch_size, batch_length)
            assert_windows_valid(batch, newest=t, oldest=max(0, t + 1 - per_env_capacity))
            np.testing.assert_array_equal(batch["vector"][..., 0], 1000 * batch["env"] + batch["t"])
    assert len(replay) == num_envs * min(num_steps, per_env_capacity)
    assert replay.ready == (num_steps >= batch_length)


def test_holds_batch_once_one_batch_of_steps_is_stored():
    replay = Replay(capacity=100, batch_size=4, batch_length=3, num_envs=2, online=False)
    for _ in range(5):  # 10 steps: windows exist but fewer than 4 × 3 steps
        replay.add({"x": np.zeros((2, 1))})
    assert replay.ready and not replay.holds_batch
    replay.add({"x": np.zeros((2, 1))})
    assert replay.holds_batch
