"""Run outputs: metrics.jsonl, TensorBoard scalars, GIF videos, console progress, rates."""

from __future__ import annotations

import io
import json
import math
import re
import sys

import numpy as np
import pytest
import torch
from rich.cells import cell_len
from rich.console import Console
from rich.file_proxy import FileProxy

from reverie.errors import UserError
from reverie.logging import METRICS_FILE, MetricsWriter, Progress, Rate, read_metrics


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


# --------------------------------------------------------------------------------------------
# Progress


def plain_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=False, width=200), buffer


def test_progress_prints_plain_status_lines_when_not_a_terminal():
    console, buffer = plain_console()
    clock = FakeClock(0.0)
    with Progress(1000, console=console, plain_interval=10.0, clock=clock) as progress:
        clock.now = 1.0
        progress.update(100, {"return": 12.5, "loss": 0.25, "updates": 10})
        clock.now = 2.0
        progress.update(200, {"loss": 0.2})  # within the interval: not printed
        clock.now = 11.0
        progress.update(600, {"updates": 60})
        progress.log("evaluation done")
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 4  # first update, one after the interval, the log line, close
    assert lines[0].startswith("step 100/1,000 (10.0%) | 100.0 steps/s")
    assert "return 12.5" in lines[0] and "loss 0.25" in lines[0]
    # Rates use a 10 s window, which now starts at the sample of t = 1:
    # (600 − 100) steps in (11 − 1) s = 50.0/s; (60 − 10) updates in (11 − 1) s = 5.0/s
    assert lines[1].startswith("step 600/1,000 (60.0%) | 50.0 steps/s | 5.0 upd/s")
    assert "return 12.5" in lines[1]  # the last episode return stays visible
    assert "| loss 0.2 |" in lines[1]  # the newest loss, not 0.25
    assert lines[1].endswith("eta 0:00:08")  # 400 steps left at 50 steps/s
    assert lines[2] == "evaluation done"
    assert lines[3].startswith("step 600/1,000")
    assert "step 200" not in buffer.getvalue()


def test_progress_disabled_prints_only_log_lines():
    console, buffer = plain_console()
    progress = Progress(100, enabled=False, console=console)
    progress.update(50, {"loss": 1.0})
    progress.log("hello")
    progress.close()
    assert buffer.getvalue() == "hello\n"


def test_progress_live_bar_on_a_terminal():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=160)
    with Progress(1000, initial_step=100, console=console) as progress:
        progress.update(500, {"return": 3.0})
        progress.log("checkpoint saved")
    text = buffer.getvalue()
    assert "500/1,000" in text
    assert "return 3" in text
    assert "checkpoint saved" in text


def terminal(width: int) -> Console:
    return Console(file=io.StringIO(), width=width, record=True, force_terminal=True)


def rendered(progress: Progress, width: int) -> list[str]:
    """The bar's lines as a `width`-column terminal shows them."""
    console = terminal(width)
    console.print(progress.renderable)
    return console.export_text().splitlines()


LOSSES = {"episode/return": 123.456, "loss/rec": 0.01234, "loss/rew": 0.5678,
          "loss/policy": -1.234, "loss/value": 2.345}
LOSS_TEXT = {"episode/return": "123.5", "loss/rec": "0.01234", "loss/rew": "0.5678",
             "loss/policy": "-1.234", "loss/value": "2.345"}


def run_to_step_1239(console: Console, prefill: int) -> Progress:
    """A 50,000-step run: 1,000 fast steps in 0.5 s (the prefill when `prefill` is 1,000), then
    239 slow steps in 5 s, with 4 updates per step after step 1,000; the clock ends at 5.5 s."""
    clock = FakeClock(0.0)
    options = {"prefill": prefill} if prefill else {}  # without: the plain old call
    progress = Progress(50_000, console=console, clock=clock, **options)
    clock.now = 0.25
    progress.update(500, {"updates": 0})
    clock.now = 0.5
    progress.update(1_000, {"updates": 0})
    for j in range(1, 21):  # every 0.25 s: each update redraws
        clock.now = 0.5 + 0.25 * j
        step = 1_000 + round(239 * j / 20)
        progress.update(step, {"updates": 4 * (step - 1_000), **(LOSSES if j == 20 else {})})
    return progress


# Shown steps/s is the recent rate over all steps: 1,239 steps in 5.5 s = 225.3/s. With a
# prefill of 1,000 the ETA uses only the steps since the prefill ended at 0.5 s: 239 steps in
# 5 s = 47.8/s, and 48,761 steps left take 1,020 s. Without a prefill: 48,761 / 225.27 = 216 s.
# Updates: counted from the first "updates" value at 0.25 s, 956 in 5.25 s = 182.1/s.
ETA = {1_000: "eta 0:17:00", 0: "eta 0:03:36"}


@pytest.mark.parametrize("prefill", [1_000, 0])
@pytest.mark.parametrize("width", [80, 120, 160])
def test_bar_keeps_counter_percent_eta_and_rates_at_any_width(width, prefill):
    console = terminal(width)
    progress = run_to_step_1239(console, prefill)
    console.export_text(clear=True)  # forget the draws so far
    progress.close()  # draws the final state once, as the terminal keeps it
    lines = console.export_text().splitlines()
    assert len(lines) == 1
    line = lines[0]
    assert cell_len(line) <= width
    for required in ("1,239/50,000", "2.5%", ETA[prefill], "225.3 steps/s", "182.1 upd/s"):
        assert required in line, (required, line)
    assert "…" not in line  # nothing cut mid-text
    # Extra stats appear whole, in priority order (first given first), as far as they fit.
    shown = [key for key in LOSSES if key in line]
    assert shown == list(LOSSES)[: len(shown)]
    for key in shown:
        assert f"{key} {LOSS_TEXT[key]}" in line
    if width == 160:
        assert "episode/return 123.5" in line and "loss/rec 0.01234" in line
    if width == 80:
        assert "loss/" not in line  # the losses go before any required field
    assert rendered(progress, width) == lines  # the renderable lays out the same line


def test_bar_drops_the_bar_graphic_before_required_fields_when_narrow():
    progress = run_to_step_1239(terminal(60), 1_000)
    line = rendered(progress, 60)[0]
    assert cell_len(line) <= 60
    assert "━" not in line and "loss/" not in line
    for required in ("1,239/50,000", "2.5%", "eta 0:17:00", "steps/s", "upd/s"):
        assert required in line
    wide = rendered(progress, 160)[0]
    assert "━" in wide  # the same state at 160 columns has room for the bar
    progress.close()


def test_eta_during_prefill_shows_only_the_prefill_time_left():
    clock = FakeClock(0.0)
    console = terminal(80)
    progress = Progress(50_000, console=console, prefill=5_000, clock=clock)
    clock.now = 2.0
    progress.update(1_239, {"updates": 0, **LOSSES})
    line = rendered(progress, 80)[0]
    # 1,239 steps in 2 s = 619.5/s; 3,761 prefill steps left take 6.07 s
    assert "prefill 0:00:06 left" in line and "eta ?" in line
    assert not re.search(r"eta \d", line)  # no number that pretends to include training
    assert "1,239/50,000" in line and "619.5 steps/s" in line and "upd/s" in line
    assert cell_len(line) <= 80
    status = progress.status_line()
    assert status.endswith("| prefill 0:00:06 left | eta ?")
    progress.close()


def test_eta_after_the_prefill_starts_a_fresh_rate_window():
    clock = FakeClock(0.0)
    console, buffer = plain_console()
    progress = Progress(10_000, console=console, prefill=1_000, clock=clock, plain_interval=1.0)
    for t, step in [(1.0, 500), (2.0, 1_004), (3.0, 1_024), (4.0, 1_044)]:  # crosses at 1,004
        clock.now = t
        progress.update(step)
    # Training steps only: (1,044 − 1,004) / (4 − 2) = 20/s; 8,956 left: 447.8 s
    assert progress.status_line().endswith("| eta 0:07:27")
    assert "eta ?" in buffer.getvalue().splitlines()[0]  # in the prefill at t = 1
    progress.close()


def test_resumed_run_past_the_prefill_measures_the_eta_from_the_start():
    clock = FakeClock(100.0)
    console, _ = plain_console()
    progress = Progress(50_000, initial_step=20_000, console=console, prefill=1_000, clock=clock)
    clock.now = 110.0
    progress.update(20_500)
    assert progress.status_line().endswith("| eta 0:09:50")  # 29,500 left at 50/s
    progress.close()


def test_live_bar_redraws_at_most_refresh_per_second_and_closes_once():
    clock = FakeClock(0.0)
    console = terminal(120)
    progress = Progress(1_000, console=console, refresh_per_second=4.0, clock=clock)
    assert isinstance(sys.stdout, FileProxy)  # prints go above the bar while it is live
    for i in range(100):  # 100 updates in one second
        clock.now = i / 100
        progress.update(i, {"updates": i})
    draws = console.export_text(clear=False).count("steps/s")
    assert draws == 4  # at t = 0, 0.25, 0.5, 0.75
    progress.log("evaluation done")
    text = console.export_text(clear=False)
    assert "evaluation done" in text
    progress.close()
    final = console.export_text(clear=False)
    assert final.count("steps/s") == text.count("steps/s") + 1  # the final state, drawn once
    assert final.endswith(rendered(progress, 120)[0] + "\n")
    assert "99/1,000" in rendered(progress, 120)[0]
    raw = console.file.getvalue()
    assert raw.endswith("\x1b[?25h")  # cursor shown again
    assert not isinstance(sys.stdout, FileProxy)  # stdout given back
    progress.close()  # a second close does nothing
    progress.update(500)
    assert console.file.getvalue() == raw
