"""Run outputs: metrics.jsonl, TensorBoard scalars, GIF videos, rates. The console progress bar
is in test_progress_bar.py."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch

from reverie.errors import UserError
from reverie.logging import METRICS_FILE, MetricsWriter, Rate, read_metrics


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def lines_of(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------------------------
# MetricsWriter / read_metrics


def test_each_write_is_one_json_line_with_step(tmp_path):
    writer = MetricsWriter(tmp_path, tensorboard=False)
    writer.write(10, {"loss": 0.5, "episodes": 3})
    writer.write(20, {"loss": 0.25})
    # flushed before close: a reader sees the rows while the run is going
    assert lines_of(tmp_path / METRICS_FILE) == [
        {"step": 10, "loss": 0.5, "episodes": 3},
        {"step": 20, "loss": 0.25},
    ]
    writer.close()
    writer.close()  # idempotent


def test_second_writer_appends_like_a_resumed_run(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        writer.write(1, {"a": 1.0})
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        writer.write(2, {"a": 2.0})
    assert [row["step"] for row in read_metrics(tmp_path)] == [1, 2]


def test_numpy_and_tensor_values_become_plain_numbers(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        writer.write(
            5,
            {
                "np_float": np.float32(0.5),
                "np_int": np.int64(7),
                "np_bool": np.bool_(True),
                "np_0d": np.array(1.5),
                "tensor": torch.tensor(2.5),
                "tensor_1": torch.tensor([3.5]),
                "tensor_grad": torch.tensor(4.0, requires_grad=True) * 1.5,  # 6.0
                "tensor_bf16": torch.tensor(0.25, dtype=torch.bfloat16),
            },
        )
    row = lines_of(tmp_path / METRICS_FILE)[0]
    assert row == {
        "step": 5,
        "np_float": 0.5,
        "np_int": 7,
        "np_bool": 1,
        "np_0d": 1.5,
        "tensor": 2.5,
        "tensor_1": 3.5,
        "tensor_grad": 6.0,
        "tensor_bf16": 0.25,
    }
    assert list(row) == ["step", "np_float", "np_int", "np_bool", "np_0d", "tensor",
                         "tensor_1", "tensor_grad", "tensor_bf16"]  # caller's key order kept


def test_non_finite_values_are_written_as_null(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        writer.write(1, {"nan": float("nan"), "inf": torch.tensor(float("inf")), "ok": 1.0})
    text = (tmp_path / METRICS_FILE).read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON
    assert json.loads(text) == {"step": 1, "nan": None, "inf": None, "ok": 1.0}


def test_bad_metric_values_are_rejected_with_the_key(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        with pytest.raises(ValueError, match=r"'vec' has shape \(3,\)"):
            writer.write(1, {"vec": torch.zeros(3)})
        with pytest.raises(TypeError, match="'name'"):
            writer.write(1, {"name": "abc"})
        with pytest.raises(ValueError, match="'step'"):
            writer.write(1, {"step": 3})
    assert (tmp_path / METRICS_FILE).read_text() == ""  # nothing half-written


def test_tensorboard_events_hold_the_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricsWriter(tmp_path) as writer:
        writer.write(3, {"train/loss": 0.5, "nan": float("nan")})
        writer.write(7, {"train/loss": torch.tensor(0.25)})
    event_files = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(event_files) == 1
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [(e.step, e.value) for e in loss] == [(3, 0.5), (7, 0.25)]
    assert math.isnan(events.Scalars("nan")[0].value)


def test_read_metrics_skips_a_truncated_last_line(tmp_path):
    path = tmp_path / METRICS_FILE
    path.write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a": 2.0}\n{"step": 3, "a"')
    assert read_metrics(path) == [{"step": 1, "a": 1.0}, {"step": 2, "a": 2.0}]


def test_read_metrics_rejects_a_broken_middle_line(tmp_path):
    path = tmp_path / METRICS_FILE
    path.write_text('{"step": 1}\n{"step": 2, oops\n{"step": 3}\n')
    with pytest.raises(UserError, match="line 2 is not valid JSON"):
        read_metrics(path)


def test_read_metrics_missing_file_says_what_to_pass(tmp_path):
    with pytest.raises(UserError, match="no metrics file"):
        read_metrics(tmp_path / "nothing")


def test_resuming_after_a_crash_drops_the_partial_row(tmp_path):
    path = tmp_path / METRICS_FILE
    path.write_text('{"step": 1}\n{"step": 2, "lo')  # the crashed run died mid-write
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        writer.write(2, {"loss": 1.0})
    assert read_metrics(path) == [{"step": 1}, {"step": 2, "loss": 1.0}]
    assert len(path.read_text().splitlines()) == 2


def test_video_is_written_as_a_gif(tmp_path):
    from PIL import Image

    frames = np.zeros((3, 8, 10, 3), np.uint8)  # (T, H, W, C), each frame a different grey
    for t in range(3):
        frames[t] = 60 * (t + 1)
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        path = writer.video(42, "eval/policy", frames)
    assert path == tmp_path / "videos" / "eval_policy_000000042.gif"
    with Image.open(path) as gif:
        assert gif.size == (10, 8)
        assert gif.n_frames == 3
        gif.seek(2)
        assert gif.convert("RGB").getpixel((0, 0)) == (180, 180, 180)


def test_video_accepts_a_single_channel(tmp_path):
    from PIL import Image

    frames = np.stack([np.full((4, 4, 1), v, np.uint8) for v in (0, 255)])  # (2, 4, 4, 1)
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        path = writer.video(1, "grey", frames)
    with Image.open(path) as gif:
        assert gif.n_frames == 2


def test_video_rejects_bad_frames(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        with pytest.raises(ValueError, match=r"\(T, H, W, C\) uint8"):
            writer.video(1, "bad", np.zeros((3, 8, 8, 3), np.float32))
        with pytest.raises(ValueError, match=r"\(T, H, W, C\) uint8"):
            writer.video(1, "bad", np.zeros((8, 8, 3), np.uint8))


def test_video_without_pillow_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)  # makes `from PIL import Image` fail
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        with pytest.raises(UserError, match="pip install pillow"):
            writer.video(1, "clip", np.zeros((2, 4, 4, 3), np.uint8))


# --------------------------------------------------------------------------------------------
# Rate


def test_rate_over_a_sliding_window():
    clock = FakeClock(0.0)
    rate = Rate(window=10.0, clock=clock)
    assert rate.rate() == 0.0  # no time has passed
    clock.now = 2.0
    rate.add(100)
    assert rate.rate() == pytest.approx(100 / 2)  # 50
    clock.now = 4.0
    rate.add(100)
    assert rate.rate() == pytest.approx(200 / 4)  # 50
    clock.now = 5.0
    assert rate.rate() == pytest.approx(200 / 5)  # 40: nothing happened in the last second
    clock.now = 20.0
    rate.add(10)
    # samples (0, 0), (2, 100), (4, 200), (20, 210); the window starts at the newest sample at
    # least 10 s old, (4, 200): rate = (210 − 200) / (20 − 4) = 0.625
    assert rate.rate() == pytest.approx(10 / 16)
    assert rate.total == 210


def test_rate_from_a_running_total_with_an_initial_count():
    clock = FakeClock(100.0)
    rate = Rate(window=5.0, initial=1000, clock=clock)  # e.g. a resumed run at step 1000
    clock.now = 104.0
    rate.update(1600)
    assert rate.rate() == pytest.approx(600 / 4)  # 150, not 1600 / 4
