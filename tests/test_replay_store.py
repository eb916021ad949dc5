"""Tests for reverie.run.replay_store: chunk files under logdir/replay/ and the replay rebuilt from
them after a crash (steps before the checkpoint restored, steps after it recovered, nothing twice)."""

from __future__ import annotations

import numpy as np
import pytest
from test_replay import fill, make_step

from reverie.errors import ReverieWarning
from reverie.replay import Replay
from reverie.replay import ReplayStore


def spans(store: ReplayStore) -> list[tuple[int, int]]:
    return [(c.start, c.end) for c in store.chunks()]


def make(tmp_path, capacity=100, num_envs=2, chunk_length=8, seed=3) -> tuple[Replay, ReplayStore]:
    replay = Replay(capacity=capacity * num_envs, batch_size=4, batch_length=4, num_envs=num_envs, seed=seed)
    return replay, ReplayStore(tmp_path / "replay", replay, chunk_length)


def grow(replay: Replay, store: ReplayStore, start: int, count: int) -> None:
    """Add steps t = start .. start + count - 1 the way the training loop does."""
    for t in range(start, start + count):
        replay.add(make_step(t, replay.num_envs))
        store.write_due()


def test_chunks_are_written_every_chunk_length_and_on_flush(tmp_path):
    replay, store = make(tmp_path)
    grow(replay, store, 0, 20)
    assert spans(store) == [(0, 8), (8, 16)]  # the unfinished chunk stays in memory
    store.flush()
    assert spans(store) == [(0, 8), (8, 16), (16, 20)]
    grow(replay, store, 20, 10)
    assert spans(store) == [(0, 8), (8, 16), (16, 20), (20, 28)]  # chunks never overlap
    with np.load(store.chunks()[2].path) as chunk:
        np.testing.assert_array_equal(chunk["t"], [[16, 17, 18, 19]] * 2)  # (num_envs, steps)
        np.testing.assert_array_equal(chunk["env"][:, 0], [0, 1])


def test_chunk_length_is_capped_by_the_ring_so_no_step_is_overwritten_before_it_is_written(tmp_path):
    replay, store = make(tmp_path, capacity=10, chunk_length=1024)
    grow(replay, store, 0, 35)
    assert spans(store) == [(0, 10), (10, 20), (20, 30)]


def test_prune_deletes_chunks_that_left_the_capacity(tmp_path):
    replay, store = make(tmp_path, capacity=16)
    grow(replay, store, 0, 40)
    store.flush()
    assert spans(store) == [(24, 32), (32, 40)]  # the replay holds t in [24, 40)


def test_a_large_image_replay_writes_only_the_steps_it_holds(tmp_path):
    replay = Replay(capacity=1_000_000, batch_size=2, batch_length=3, num_envs=2)
    store = ReplayStore(tmp_path / "replay", replay, chunk_length=1024)
    for t in range(10):
        replay.add({**make_step(t, 2), "image": np.full((2, 64, 64, 3), t, np.uint8)})
    store.flush()
    (chunk,) = store.chunks()
    assert chunk.path.stat().st_size < 2 * 10 * 64 * 64 * 3 + 50_000  # 10 steps, not 1M


def checkpoint_of(replay: Replay) -> dict:
    """What the trainer saves in a checkpoint: the replay's state without its data."""
    return replay.state_dict(with_data=False)


def assert_same_stream(a: Replay, b: Replay, rounds: int = 4) -> None:
    for _ in range(rounds):
        x, y = a.sample(), b.sample()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_restore_at_the_checkpoint_continues_exactly(tmp_path):
    replay, store = make(tmp_path)
    grow(replay, store, 0, 30)
    replay.sample()  # consume part of the online queue, advance the RNG
    store.flush()
    state = checkpoint_of(replay)

    resumed, resumed_store = make(tmp_path, seed=99)
    recovered = resumed_store.restore(state)
    assert recovered == {} and resumed.added == 30 and len(resumed) == len(replay)
    assert resumed.queue_length == replay.queue_length
    assert_same_stream(replay, resumed)


def test_steps_of_chunks_written_after_the_checkpoint_are_recovered_once(tmp_path):
    """Kill after the checkpoint at t=20 with chunks up to t=36 on disk and t=36..41 in memory only:
    the resumed replay holds t < 36, each step once, with the online queue of an uninterrupted run."""
    replay, store = make(tmp_path)
    grow(replay, store, 0, 20)
    store.flush()
    state = checkpoint_of(replay)
    grow(replay, store, 20, 22)
    assert spans(store)[-2:] == [(20, 28), (28, 36)]
    on_disk = 36

    resumed, resumed_store = make(tmp_path, seed=99)
    recovered = resumed_store.restore(state)
    assert resumed.added == on_disk
    np.testing.assert_array_equal(recovered["t"][0], np.arange(20, on_disk))
    stored_t = resumed.export_steps(0, on_disk)["t"]
    np.testing.assert_array_equal(stored_t, np.tile(np.arange(on_disk), (2, 1)))  # no gap, no repeat

    # Same samples as a replay that saw the same steps with the checkpoint's RNG and queue.
    expected = Replay(capacity=200, batch_size=4, batch_length=4, num_envs=2, seed=3)
    fill(expected, 20)
    expected.load_state_dict({**state, "data": expected.export_steps(0, 20)})
    fill(expected, on_disk - 20, start=20)
    assert_same_stream(expected, resumed)

    # New chunks continue where the recovered ones end; a second resume finds one chain.
    grow(resumed, resumed_store, on_disk, 8)
    resumed_store.flush()
    chain = spans(resumed_store)
    assert all(a[1] == b[0] for a, b in zip(chain, chain[1:])) and chain[-1][1] == on_disk + 8


def test_restore_keeps_only_the_newest_capacity_and_reads_back_from_the_checkpoint(tmp_path):
    replay, store = make(tmp_path, capacity=16, chunk_length=5)
    grow(replay, store, 0, 50)
    store.flush()
    resumed, resumed_store = make(tmp_path, capacity=16, chunk_length=5)
    resumed_store.restore(checkpoint_of(replay))
    assert len(resumed) == 2 * 16
    np.testing.assert_array_equal(resumed.export_steps(34, 50)["t"], np.tile(np.arange(34, 50), (2, 1)))


def test_a_chunk_spanning_the_checkpoint_is_split(tmp_path):
    replay, store = make(tmp_path, chunk_length=10)
    grow(replay, store, 0, 7)
    state = checkpoint_of(replay)  # a checkpoint whose flush did not happen
    grow(replay, store, 7, 13)  # chunk [0, 10) spans it, [10, 20) follows
    resumed, resumed_store = make(tmp_path, chunk_length=10)
    recovered = resumed_store.restore(state)
    np.testing.assert_array_equal(recovered["t"][1], np.arange(7, 20))
    np.testing.assert_array_equal(resumed.export_steps(0, 20)["t"][1], np.arange(20))


def test_an_unreadable_chunk_after_the_checkpoint_ends_the_recovery_there(tmp_path):
    replay, store = make(tmp_path)
    grow(replay, store, 0, 16)
    store.flush()
    state = checkpoint_of(replay)
    grow(replay, store, 16, 32)  # chunks [16, 24), [24, 32), [32, 40), [40, 48)
    (tmp_path / "replay" / "chunk_0000000024_0000000032.npz").write_bytes(b"torn")
    (tmp_path / "replay" / ".chunk_0000000048_0000000056.npz.tmp").write_bytes(b"cut short")
    resumed, resumed_store = make(tmp_path)
    with pytest.warns(ReverieWarning, match="chunk_0000000024_0000000032.npz is unreadable"):
        recovered = resumed_store.restore(state)
    np.testing.assert_array_equal(recovered["t"][0], np.arange(16, 24))
    assert resumed.added == 24 and resumed_store.written == 24
    assert spans(resumed_store) == [(0, 8), (8, 16), (16, 24)]  # the rest set aside as *.stale
    assert len(list((tmp_path / "replay").glob("*.stale"))) == 3
    assert not list((tmp_path / "replay").glob("*.tmp"))


def test_missing_chunks_before_the_checkpoint_give_a_warning_and_a_shorter_replay(tmp_path):
    replay, store = make(tmp_path)
    grow(replay, store, 0, 24)
    store.flush()
    (tmp_path / "replay" / "chunk_0000000008_0000000016.npz").unlink()
    resumed, resumed_store = make(tmp_path)
    with pytest.warns(ReverieWarning, match="held 24 steps per env at the checkpoint but 8 were found"):
        resumed_store.restore(checkpoint_of(replay))
    assert len(resumed) == 2 * 8 and resumed.ready
    batch = resumed.sample()
    assert batch["t"].min() >= 16  # only the stored steps are sampled


def test_no_checkpoint_and_no_chunks_is_a_fresh_replay(tmp_path):
    replay, store = make(tmp_path)
    assert store.restore(checkpoint_of(replay)) == {}
    assert len(replay) == 0 and not replay.ready
