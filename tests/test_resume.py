"""A run is crash-safe: kill -9 and resume, steps recovered from replay chunks, fallback from a
corrupt checkpoint, refusal of a checkpoint that runs code, a full disk, a config that does not
match, and identical metrics for the same seed."""

from __future__ import annotations

import errno
import itertools
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from resume_envs import STAMPED_ID, STAMPED_IMAGE_ID, stamp_image

import reverie
from reverie import cli
from reverie.errors import CheckpointError
from reverie.logging import read_metrics
from reverie.run import checkpoint as ckpt
from reverie.run.train import Trainer

ENV = f"resume_envs:{STAMPED_ID}"
FAST = {"run.prefill": 100, "run.train_ratio": 16, "run.eval_every": 0, "run.report_every": 0,
        "replay.chunk_length": 50, "run.threads": 1, "run.log_every": 0}


def cli_args(overrides: dict) -> list[str]:
    return ["--preset", "debug", "--no-progress", *(f"{k}={v}" for k, v in overrides.items())]


def chunk_spans(logdir: Path) -> list[tuple[int, int]]:
    return sorted(tuple(int(x) for x in p.stem.split("_")[1:]) for p in (logdir / "replay").glob("chunk_*.npz"))


def contiguous_end(logdir: Path) -> int:
    """End of the chain of chunks that starts at step 0."""
    end = 0
    for start, stop in chunk_spans(logdir):
        if start == end:
            end = stop
    return end


def steps_on_disk(logdir: Path) -> dict[str, np.ndarray]:
    """Every step of the replay folder in time order (one env): {key: (n, ...)}."""
    spans = chunk_spans(logdir)
    assert spans and spans[0][0] == 0 and all(a[1] == b[0] for a, b in itertools.pairwise(spans)), spans
    parts = []
    for start, stop in spans:
        with np.load(logdir / "replay" / f"chunk_{start:010d}_{stop:010d}.npz") as chunk:
            parts.append({key: chunk[key][0] for key in chunk.files})
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def assert_each_step_stored_once(logdir: Path, total: int) -> dict[str, np.ndarray]:
    steps = steps_on_disk(logdir)
    stamps = steps["vector"].astype(np.int64)  # (n, 3): id high, id low, t
    assert len(stamps) == total
    assert len({tuple(s) for s in stamps}) == total, "a step is stored twice"
    episodes: dict[tuple[int, int], list[int]] = {}
    for high, low, t in stamps:
        episodes.setdefault((high, low), []).append(t)
    for ts in episodes.values():  # nothing lost inside an episode
        assert ts == list(range(len(ts))), ts
    return steps


def newest_step(logdir: Path) -> int:
    return int(ckpt.list_checkpoints(logdir / "checkpoints")[-1].stem.split("_")[1])


def kill_after_a_checkpoint(command: list[str], logdir: Path, seed: int, at_least: int = 250) -> None:
    """Start a training subprocess and SIGKILL it at a random moment (mid-update, mid-write or between)
    soon after it has written a checkpoint of step ≥ `at_least`."""
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while time.time() < deadline and first.poll() is None:
        if ckpt.list_checkpoints(logdir / "checkpoints") and newest_step(logdir) >= at_least:
            break
        time.sleep(0.02)
    time.sleep(random.Random(seed).uniform(0.0, 0.4))
    first.kill()
    assert first.wait() == -9, first.stderr.read().decode()[-2000:]


def test_sigkill_at_a_random_moment_then_resume_loses_and_repeats_nothing(tmp_path):
    logdir, total = tmp_path / "run", 1000
    command = [sys.executable, "-m", "reverie", "train", "--logdir", str(logdir), "--steps", str(total)]
    kill_after_a_checkpoint([*command, "--env", ENV, *cli_args({**FAST, "run.checkpoint_every": 0.004})], logdir, 0)
    killed_at_checkpoint, on_disk = newest_step(logdir), contiguous_end(logdir)
    assert 250 <= killed_at_checkpoint <= on_disk < total

    resumed = subprocess.run(command + ["--no-progress"], check=False, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # The run continues from the newest checkpoint plus the complete chunks written after it.
    assert f"resumed {logdir} with its saved config at step {on_disk:,}" in resumed.stdout
    _, payload = ckpt.load_latest_checkpoint(logdir / "checkpoints")
    assert payload["counters"]["step"] == total and payload["replay"]["added"] == total
    steps = assert_each_step_stored_once(logdir, total)
    assert steps["is_first"][on_disk]  # the env restarted with the run


def test_sigkill_with_disk_storage_then_resume_keeps_every_ring_image_with_its_own_step(tmp_path):
    """replay.storage=disk, a ring of 200 slots that wraps twice: after a kill -9 and the resume, each
    step is stored once, and every ring slot whose stamp says it holds step t holds t's image."""
    logdir, total = tmp_path / "run", 600
    overrides = {**FAST, "run.checkpoint_every": 0.004, "replay.storage": "disk", "replay.capacity": 200,
                 "model.encoder.mults": "[2,2]", "model.decoder.mults": "[2,2]"}
    command = [sys.executable, "-m", "reverie", "train", "--logdir", str(logdir), "--steps", str(total)]
    kill_after_a_checkpoint([*command, "--env", f"resume_envs:{STAMPED_IMAGE_ID}", *cli_args(overrides)], logdir, 1)
    on_disk = max(stop for _, stop in chunk_spans(logdir))  # the oldest chunks were pruned
    assert 250 <= newest_step(logdir) <= on_disk < total

    resumed = subprocess.run(command + ["--no-progress"], check=False, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed {logdir} with its saved config at step {on_disk:,}" in resumed.stdout
    _, payload = ckpt.load_latest_checkpoint(logdir / "checkpoints")
    assert payload["counters"]["step"] == total and payload["replay"]["added"] == total

    stamps = {}  # time → the (3,) stamp of that step, from the chunks still on disk (no images in them)
    for start, stop in chunk_spans(logdir):
        with np.load(logdir / "replay" / f"chunk_{start:010d}_{stop:010d}.npz") as chunk:
            assert "image" not in chunk.files
            stamps.update(zip(range(start, stop), chunk["vector"][0]))
    assert len({tuple(v) for v in stamps.values()}) == len(stamps), "a step is stored twice"
    ring = logdir / "replay" / "ring"
    times = np.fromfile(ring / "times.i64", np.int64)  # (200,) the time each slot holds
    images = np.load(ring / "image.npy", mmap_mode="r")  # (1, 200, 16, 16, 3)
    assert sorted(times) == list(range(total - 200, total))  # the newest 200 steps, each once
    for slot, t in enumerate(times):
        np.testing.assert_array_equal(images[0, slot], stamp_image(stamps[t]), err_msg=f"slot {slot}, step {t}")


def crash_at(monkeypatch, step: int) -> None:
    """Make the next run die without saving once it reaches `step` (like a kill)."""
    original = Trainer.train_due

    def train_due(self):
        if self.counters.step >= step:
            raise SystemError("simulated crash")
        return original(self)

    monkeypatch.setattr(Trainer, "train_due", train_due)


def test_steps_after_the_checkpoint_are_recovered_and_the_schedule_matches_an_uninterrupted_run(
        tmp_path, monkeypatch):
    straight = reverie.train(ENV, logdir=tmp_path / "straight", presets=["debug"], steps=600,
                             overrides=FAST, progress=False)

    logdir = tmp_path / "crashed"
    reverie.train(ENV, logdir=logdir, presets=["debug"], steps=300, overrides=FAST, progress=False)
    with monkeypatch.context() as patch:
        crash_at(patch, 470)
        with pytest.raises(SystemError):
            reverie.train(ENV, logdir=logdir, steps=600, progress=False)
    assert newest_step(logdir) == 300 and contiguous_end(logdir) == 450  # chunks of 50 after 300
    resumed = reverie.train(ENV, logdir=logdir, steps=600, progress=False)
    assert resumed["step"] == straight["step"] == 600
    assert resumed["updates"] == straight["updates"]  # the recovered steps' updates were run
    steps = assert_each_step_stored_once(logdir, 600)
    assert resumed["episodes"] == int(steps["is_last"].sum())
    rows = [r for r in read_metrics(logdir / "metrics.jsonl") if "replay_steps" in r]
    assert rows[-1]["replay_steps"] == 600


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    logdir = tmp_path / "run"
    for steps in (200, 300):
        reverie.train(ENV, logdir=logdir, presets=["debug"], steps=steps, overrides=FAST, progress=False)
    newest = ckpt.list_checkpoints(logdir / "checkpoints")[-1]
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="ckpt_000000300.pt is unreadable"):
        result = reverie.train(ENV, logdir=logdir, steps=400, progress=False)
    # The previous checkpoint (200) plus the chunks up to 300 written with the lost one.
    assert result["step"] == 400
    assert_each_step_stored_once(logdir, 400)


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch, capsys):
    logdir = tmp_path / "run"
    reverie.train(ENV, logdir=logdir, presets=["debug"], steps=150, overrides=FAST, progress=False)
    newest = ckpt.list_checkpoints(logdir / "checkpoints")[-1]
    torch.save({"agent": RunsCode()}, newest)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="could run code when loaded and was refused"):
        ckpt.load_latest_checkpoint(logdir / "checkpoints")
    assert cli.main(["train", "--logdir", str(logdir), "--steps", "200", "--no-progress"]) == 2
    assert "was refused" in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists()


def test_a_full_disk_while_writing_a_checkpoint_exits_2_and_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    logdir = tmp_path / "run"
    assert cli.main(["train", "--env", ENV, "--logdir", str(logdir), "--steps", "150",
                     *cli_args(FAST)]) == 0
    before = ckpt.list_checkpoints(logdir / "checkpoints")
    contents = before[-1].read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    capsys.readouterr()
    assert cli.main(["train", "--logdir", str(logdir), "--steps", "250", "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "could not write a checkpoint" in lines[0]
    assert os.strerror(errno.ENOSPC) in lines[0] and "ckpt_000000150.pt is intact" in lines[0]
    assert ckpt.list_checkpoints(logdir / "checkpoints") == before and before[-1].read_bytes() == contents
    assert not list((logdir / "checkpoints").glob(".*.tmp"))
    monkeypatch.undo()  # space freed: the same command resumes
    assert cli.main(["train", "--logdir", str(logdir), "--steps", "250", "--no-progress"]) == 0
    assert newest_step(logdir) == 250


def test_a_checkpoint_of_another_model_size_is_refused_without_damage(tmp_path, capsys):
    logdir = tmp_path / "run"
    assert cli.main(["train", "--env", ENV, "--logdir", str(logdir), "--steps", "150",
                     *cli_args(FAST)]) == 0
    config = (logdir / "config.yaml").read_text()
    (logdir / "config.yaml").write_text(config.replace("deter: 64", "deter: 128"))
    files = {p: p.read_bytes() for p in logdir.rglob("*") if p.is_file() and "tensorboard" not in p.parts}
    capsys.readouterr()
    assert cli.main(["train", "--logdir", str(logdir), "--steps", "200", "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    # One line naming the first mismatching tensor with both shapes, and the fix.
    assert len(lines) == 1 and "was made by another model than" in lines[0], lines
    assert re.search(r"rssm\.\S+ \(\d+(, \d+)*\) in the checkpoint vs \(\d+(, \d+)*\) here", lines[0]), lines[0]
    assert "use the config.yaml saved with that checkpoint" in lines[0]
    for path, data in files.items():
        if path.name != "config.yaml":  # the run rewrote only its config
            assert path.read_bytes() == data, path


def test_same_seed_gives_identical_metrics_on_cpu(tmp_path):
    def losses(name: str, seed: int = 5) -> list[dict]:
        reverie.train("CartPole-v1", logdir=tmp_path / name, presets=["debug"], steps=260, seed=seed,
                      overrides=FAST, progress=False)
        rows = read_metrics(tmp_path / name / "metrics.jsonl")
        return [{k: v for k, v in r.items() if k.startswith(("loss/", "train/"))} for r in rows if "loss/total" in r]

    first, second, other = losses("a"), losses("b"), losses("c", seed=6)
    assert len(first) > 20 and first == second
    assert first != other


def test_evaluations_stay_on_the_eval_every_grid_after_a_resume_or_an_overshooting_step():
    # A resume that recovered steps past a due evaluation (e.g. at 21,175 with eval_every 5,000)
    # evaluates once, then returns to 25,000, 30,000, ...; so does a vector step that passed 20,000.
    from reverie import config as C
    from reverie.run.counters import Counters
    from reverie.run.evaluator import Evaluator

    class Recording(Evaluator):
        def evaluate_and_log(self, final=False):
            self.ran.append(self.counters.step)

    counters = Counters(next_eval=20_000)
    evaluator = Recording(C.make_config(C.compose_presets([], None), ["run.eval_every=5000"]), None, None,
                          counters, None, None)
    evaluator.ran = []
    for step in (19_992, 21_175, 24_000, 25_008, 29_999, 30_000):
        counters.step = step
        if evaluator.due(0.0, step):
            evaluator.run()
    assert evaluator.ran == [21_175, 25_008, 30_000]
    assert counters.next_eval == 35_000
