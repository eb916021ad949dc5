"""The console progress: plain status lines off a terminal, the live bar on one (its layout at
any width, the ETA around the prefill, the redraw rate)."""

from __future__ import annotations

import io
import re
import sys

import pytest
from rich.cells import cell_len
from rich.console import Console
from rich.file_proxy import FileProxy

from reverie.logging import Progress
from test_logging import FakeClock


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
