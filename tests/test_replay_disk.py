"""Tests for `replay.storage: disk` (reverie.replay.disk): image keys in memory-mapped ring files under
the logdir, the same samples as in RAM, chunks without images, resume and crash recovery from the ring."""

from __future__ import annotations

import numpy as np
import pytest

from reverie import config as config_lib
from reverie.errors import ConfigError, ReverieWarning
from reverie.replay import Replay, ReplayStore
from reverie.replay.disk import on_disk


def image_step(t: int, num_envs: int) -> dict[str, np.ndarray]:
    """One vector-env step whose values encode (env, t), with an 8×8×3 uint8 image: shapes (N, ...)."""
    envs = np.arange(num_envs)
    image = (1000 * envs[:, None, None, None] + t + np.arange(8)[:, None, None]) % 251  # (N, 8, 1, 1)
    return {
        "t": np.full(num_envs, t, np.int64),  # (N,)
        "env": envs.astype(np.int32),  # (N,)
        "image": np.broadcast_to(image, (num_envs, 8, 8, 3)).astype(np.uint8),  # (N, 8, 8, 3)
        "is_first": np.full(num_envs, t == 0),  # (N,)
    }


def make(logdir, storage="disk", capacity=40, num_envs=2, chunk_length=8, seed=3) -> tuple[Replay, ReplayStore]:
    folder = logdir / "replay"
    replay = Replay(capacity * num_envs, batch_size=4, batch_length=4, num_envs=num_envs, seed=seed,
                    storage=storage, folder=folder / "ring" if storage == "disk" else None)
    return replay, ReplayStore(folder, replay, chunk_length)


def grow(replay: Replay, store: ReplayStore, start: int, count: int) -> None:
    for t in range(start, start + count):
        replay.add(image_step(t, replay.num_envs))
        store.write_due()


def checkpoint_of(replay: Replay) -> dict:
    return replay.state_dict(with_data=False)


def assert_same_batches(a: Replay, b: Replay, count: int = 5) -> None:
    for _ in range(count):
        x, y = a.sample(), b.sample()
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_only_uint8_images_go_on_disk():
    assert on_disk((64, 64, 3), np.uint8) and not on_disk((64, 64, 3), np.float32)
    assert not on_disk((1057,), np.uint8) and not on_disk((), np.int64)


def test_disk_storage_samples_the_same_batches_as_memory(tmp_path):
    memory, memory_store = make(tmp_path / "a", storage="memory")
    disk, disk_store = make(tmp_path / "b")
    grow(memory, memory_store, 0, 100)  # wraps the ring (40 per env) twice
    grow(disk, disk_store, 0, 100)
    assert_same_batches(memory, disk, 10)
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    a, b = memory.sample_uniform(6, rng_a), disk.sample_uniform(6, rng_b)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(memory.export_steps(70, 100)["image"], disk.export_steps(70, 100)["image"])


def test_the_image_key_is_a_memmap_under_the_logdir_and_chunks_carry_no_images(tmp_path):
    replay, store = make(tmp_path)
    grow(replay, store, 0, 20)
    store.flush()
    assert isinstance(replay._data["image"], np.memmap) and replay.disk_keys == ("image",)
    assert type(replay._data["t"]) is np.ndarray  # small keys stay in RAM
    assert replay._data["image"].shape == (2, 40, 8, 8, 3)  # (num_envs, per_env_capacity, ...)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and all(p.resolve().is_relative_to(tmp_path.resolve()) for p in files)
    assert (tmp_path / "replay" / "ring" / "image.npy").is_file()
    with np.load(store.chunks()[0].path) as chunk:
        assert sorted(chunk.files) == ["env", "is_first", "t"]
    assert "on disk (memory-mapped in" in replay.describe() and "in RAM" in replay.describe()
    memory, _ = make(tmp_path / "m", storage="memory")
    grow(memory, ReplayStore(tmp_path / "m" / "replay", memory, 8), 0, 4)
    assert memory.describe().endswith("(RAM)")


def test_resume_after_a_checkpoint_restores_the_same_data_and_stream(tmp_path):
    replay, store = make(tmp_path)
    grow(replay, store, 0, 90)
    replay.sample()  # take part of the online queue, advance the RNG
    store.flush()
    state = checkpoint_of(replay)
    del replay  # the process ends; the ring files stay

    expected, expected_store = make(tmp_path / "memory", storage="memory")
    grow(expected, expected_store, 0, 90)
    expected.sample()

    resumed, resumed_store = make(tmp_path, seed=99)
    assert resumed_store.restore(state) == {}
    assert resumed.added == 90 and len(resumed) == 2 * 40
    np.testing.assert_array_equal(resumed.export_steps(50, 90)["image"], expected.export_steps(50, 90)["image"])
    assert_same_batches(expected, resumed)
    grow(resumed, resumed_store, 90, 30)  # and it goes on writing the same ring
    grow(expected, expected_store, 90, 30)
    assert_same_batches(expected, resumed)


def test_a_crash_after_the_checkpoint_recovers_the_chunked_steps_and_drops_overwritten_ones(tmp_path):
    """Checkpoint at t=60; the crashed run went on to t=78 with chunks up to 76: its steps 60..77
    overwrote the ring slots of t=20..37, so the resumed replay holds t in [38, 76) and no stale image."""
    replay, store = make(tmp_path)
    grow(replay, store, 0, 60)
    store.flush()
    state = checkpoint_of(replay)
    grow(replay, store, 60, 18)  # chunks [60, 68), [68, 76); t=76, 77 only in the ring
    replay.sync()
    del replay  # kill -9: no flush, no checkpoint

    with pytest.warns(ReverieWarning, match="were found"):
        resumed, resumed_store = make(tmp_path, seed=99)
        recovered = resumed_store.restore(state)
    np.testing.assert_array_equal(recovered["t"][0], np.arange(60, 76))
    assert resumed.added == 76 and len(resumed) // 2 == 76 - 38
    steps = resumed.export_steps(38, 76)
    np.testing.assert_array_equal(steps["t"], np.tile(np.arange(38, 76), (2, 1)))
    for t in (38, 59, 60, 75):
        np.testing.assert_array_equal(steps["image"][:, t - 38], image_step(t, 2)["image"])
    batch = resumed.sample()  # (B, T, ...): every window's images are its own steps'
    for row in range(len(batch["t"])):
        env, t = int(batch["env"][row, 0]), int(batch["t"][row, 0])
        np.testing.assert_array_equal(batch["image"][row, 0], image_step(t, 2)["image"][env])
    grow(resumed, resumed_store, 76, 10)  # the new run writes on from the recovered head
    assert [c.start for c in resumed_store.chunks()][-1] == 76


def test_a_crash_before_the_first_checkpoint_recovers_from_chunks_and_ring(tmp_path):
    replay, store = make(tmp_path)
    grow(replay, store, 0, 20)  # chunks [0, 8), [8, 16)
    fresh_state = make(tmp_path / "other")[0].state_dict(with_data=False)
    del replay
    resumed, resumed_store = make(tmp_path)
    recovered = resumed_store.restore(fresh_state)
    np.testing.assert_array_equal(recovered["t"][1], np.arange(16))
    np.testing.assert_array_equal(resumed.export_steps(0, 16)["image"][1, 5], image_step(5, 2)["image"][1])


def test_a_bad_storage_value_is_one_config_error(tmp_path):
    with pytest.raises(ConfigError, match="replay.storage must be memory or disk, got 'ssd'"):
        config_lib.make_config(overrides=["replay.storage=ssd"])
    assert config_lib.make_config(overrides=["replay.storage=disk"]).replay.storage == "disk"
    with pytest.raises(ConfigError, match="storage must be memory or disk"):
        Replay(100, 2, 4, storage="ssd")
    with pytest.raises(ConfigError, match="needs a folder"):
        Replay(100, 2, 4, storage="disk")


def test_a_run_with_disk_storage_keeps_its_images_in_the_logdir_ring_and_resumes(tmp_path):
    import reverie
    from toy_envs import DictObsEnv

    fast = {"run.prefill": 60, "run.train_every": 20, "run.train_ratio": 32, "run.eval_every": 0,
            "run.report_every": 0, "run.log_every": 0, "replay.chunk_length": 50, "replay.storage": "disk",
            "model.encoder.mults": [2, 2], "model.decoder.mults": [2, 2]}
    logdir = tmp_path / "run"
    reverie.train(lambda: DictObsEnv(), logdir=logdir, presets=["debug"], steps=100, overrides=fast, progress=False)
    ring = logdir / "replay" / "ring"
    assert any(ring.glob("*.npy")), "the image key is on disk"
    chunks = sorted((logdir / "replay").glob("chunk_*.npz"))
    with np.load(chunks[0]) as chunk:
        assert not any(name.startswith("image") for name in chunk.files)
    result = reverie.train(lambda: DictObsEnv(), logdir=logdir, steps=150, progress=False)
    assert result["step"] == 150
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(p.resolve().is_relative_to(logdir.resolve()) for p in files)  # the run wrote only in its logdir
