"""What a run writes and shows: `metrics.jsonl`, TensorBoard scalars, videos, console progress.

Logdir layout (DESIGN §3): `metrics.jsonl` holds one JSON object per line, always with `"step"`;
TensorBoard event files go to `tensorboard/`; videos to `videos/{name}_{step:09d}.gif` and `.mp4`
(written by `reverie.video`).
A resumed run appends to the same files.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import UserError
from .video import write_gif, write_video  # noqa: F401  (write_gif: kept importable from here)

__all__ = ["METRICS_FILE", "MetricsWriter", "Progress", "Rate", "read_metrics"]

METRICS_FILE = "metrics.jsonl"
Clock = Callable[[], float]


# --------------------------------------------------------------------------------------------
# Metrics: JSONL + TensorBoard


class MetricsWriter:
    """Appends metric rows to `logdir/metrics.jsonl` and scalars to TensorBoard.

    Values may be Python numbers, numpy scalars or one-element torch tensors. Integers stay
    integers in the JSON; non-finite values are written as `null` (JSON has no NaN) and still go
    to TensorBoard as they are. Every `write` is flushed to disk before it returns.
    """

    def __init__(self, logdir: str | Path, tensorboard: bool = True) -> None:
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.path = self.logdir / METRICS_FILE
        _drop_partial_last_line(self.path)  # a crash mid-write must not corrupt the next row
        self._file = open(self.path, "a", encoding="utf-8")
        self._tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise UserError(
                    "TensorBoard logging needs the tensorboard package: pip install tensorboard"
                ) from error
            self._tb = SummaryWriter(log_dir=str(self.logdir / "tensorboard"))

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Append `{"step": step, **metrics}` as one line and log each scalar to TensorBoard."""
        if "step" in metrics:
            raise ValueError("metrics must not contain the key 'step': pass it as `step`")
        values = _to_scalars(metrics)
        row: dict[str, Any] = {"step": int(step)}
        for key, value in values.items():
            finite = isinstance(value, int) or math.isfinite(value)
            row[key] = value if finite else None
        self._file.write(json.dumps(row, allow_nan=False) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, value, global_step=int(step))
            self._tb.flush()

    def video(self, step: int, name: str, frames: np.ndarray, fps: float = 20, scale: int = 1) -> Path:
        """Write `frames` (T, H, W, C) uint8, C in (1, 3, 4), as `videos/{name}_{step:09d}.gif`
        (name made file-safe: "eval/policy" → "eval_policy"), as `.mp4` next to it when imageio-ffmpeg
        is installed, and to TensorBoard (an animated GIF under the tag `name`) when it is on.
        `scale` enlarges the frames by an integer factor (nearest neighbour). Returns the GIF's
        path. Needs Pillow; see `reverie.video`.
        """
        return write_video(self.logdir, step, name, frames, fps, scale, self._tb)

    def close(self) -> None:
        """Close the files; calling it again does nothing."""
        if not self._file.closed:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Parse a `metrics.jsonl` file (or the one in a logdir) into a list of rows.

    A last line without its newline is a write cut short by a crash and is skipped when it does
    not parse; a broken line anywhere else raises `UserError`.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise UserError(f"no metrics file at {path}: pass a run's logdir or its {METRICS_FILE}")
    lines = path.read_text(encoding="utf-8").split("\n")  # last item: "" unless cut short
    rows: list[dict[str, Any]] = []
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if index == len(lines) - 1:
                break
            raise UserError(
                f"{path} line {index + 1} is not valid JSON: fix or delete that line"
            ) from None
        if not isinstance(row, dict):
            raise UserError(f"{path} line {index + 1} is not a JSON object: fix or delete it")
        rows.append(row)
    return rows


def _to_scalars(metrics: Mapping[str, Any]) -> dict[str, int | float]:
    """Python int/float per metric, keeping order. Tensors cross to the host once per device."""
    values: dict[str, int | float] = {}
    tensors: dict[str, torch.Tensor] = {}
    for key, value in metrics.items():
        if not isinstance(key, str):
            raise TypeError(f"metric names must be strings, got {key!r}")
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(
                    f"metric {key!r} has shape {tuple(value.shape)}: log a scalar (e.g. .mean())"
                )
            tensors[key] = value
            values[key] = 0.0  # placeholder keeps the caller's key order
        else:
            values[key] = _number(key, value)
    by_device: dict[torch.device, list[str]] = {}
    for key, tensor in tensors.items():
        by_device.setdefault(tensor.device, []).append(key)
    for keys in by_device.values():
        stacked = torch.stack([tensors[k].detach().reshape(()).double() for k in keys])  # (K,)
        for key, number in zip(keys, stacked.cpu().tolist()):
            values[key] = number
    return values


def _number(key: str, value: Any) -> int | float:
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    raise TypeError(f"metric {key!r} must be a number or a one-element tensor, got {value!r}")


def _drop_partial_last_line(path: Path) -> None:
    """Truncate a file that does not end in a newline back to its last complete line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as file:
        end = file.seek(0, os.SEEK_END)
        file.seek(end - 1)
        if file.read(1) == b"\n":
            return
        position = end
        while position > 0:  # scan backwards in blocks for the last newline
            start = max(0, position - 65536)
            file.seek(start)
            block = file.read(position - start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                file.truncate(start + newline + 1)
                return
            position = start
        file.truncate(0)


# --------------------------------------------------------------------------------------------
# Rates and console progress


class Rate:
    """Events per second over a sliding window of wall time.

    Feed it either increments (`add`) or a running total (`update`). `rate()` is
    (total now − total at the window start) / (now − window start), where the window start is the
    newest sample at least `window` seconds old (or the first sample while the run is younger).
    Samples are kept at most every `window / 64` seconds, so memory stays small at any call rate.
    """

    def __init__(self, window: float = 10.0, initial: float = 0.0, clock: Clock = time.monotonic):
        if window <= 0:
            raise ValueError(f"window must be > 0 seconds, got {window}")
        self.window = window
        self._clock = clock
        self._total = float(initial)
        self._samples: deque[tuple[float, float]] = deque([(clock(), self._total)])  # (time, total)

    @property
    def total(self) -> float:
        return self._total

    def add(self, count: float = 1.0) -> None:
        """Record `count` more events now."""
        self.update(self._total + count)

    def update(self, total: float) -> None:
        """Record that the running total is `total` now."""
        now = self._clock()
        self._total = float(total)
        if now - self._samples[-1][0] >= self.window / 64:
            self._samples.append((now, self._total))
        self._prune(now)

    def rate(self) -> float:
        """Events per second over the window ending now; 0 before any time has passed."""
        now = self._clock()
        self._prune(now)
        start_time, start_total = self._samples[0]
        elapsed = now - start_time
        return (self._total - start_total) / elapsed if elapsed > 0 else 0.0

    def _prune(self, now: float) -> None:
        edge = now - self.window
        while len(self._samples) > 1 and self._samples[1][0] <= edge:
            self._samples.popleft()


class Progress:
    """Console progress of a run: a live rich bar on a terminal, plain status lines otherwise.

    `update(step, stats)` is cheap enough to call every env step: it merges `stats` (the latest
    value of each key is kept, so an episode return shown once stays visible) and redraws at most
    `refresh_per_second` times a second. On a non-terminal console (CI, a redirected stdout) it
    prints one plain line at the first update, then every `plain_interval` seconds, and at close.
    The bar shows step/total, env steps/s, gradient updates/s (from a running count under the
    stats key `"updates"`), then every other stat as `key value`. `enabled=False` shows no
    progress at all; `log` still prints.
    """

    def __init__(
        self,
        total_steps: int,
        initial_step: int = 0,
        enabled: bool = True,
        console: Any = None,
        *,
        plain_interval: float = 30.0,
        refresh_per_second: float = 4.0,
        clock: Clock = time.monotonic,
    ) -> None:
        from rich.console import Console

        self.console = console if console is not None else Console()
        self.total_steps = int(total_steps)
        self.step = int(initial_step)
        self.stats: dict[str, Any] = {}
        self._clock = clock
        self._steps_rate = Rate(initial=initial_step, clock=clock)
        self._updates_rate: Rate | None = None  # made at the first "updates" value
        self._live = enabled and self.console.is_terminal
        self._plain = enabled and not self._live
        self._interval = 1.0 / refresh_per_second if self._live else plain_interval
        self._last_shown = -math.inf
        self._closed = False
        self._bar: Any = None
        if self._live:
            self._bar = _make_bar(self.console, refresh_per_second)
            self._task = self._bar.add_task(
                "train", total=self.total_steps, completed=self.step, counter="", stats=""
            )
            self._bar.start()

    def update(self, step: int, stats: Mapping[str, Any] | None = None) -> None:
        """Record the current env step and the latest stats; redraw when it is time."""
        self.step = int(step)
        if stats:
            self.stats.update(stats)
        if not (self._live or self._plain):
            return
        now = self._clock()
        if now - self._last_shown < self._interval:
            return
        self._last_shown = now
        self._show()

    def log(self, message: str) -> None:
        """Print a line (above the bar when it is live)."""
        console = self._bar.console if self._bar is not None else self.console
        console.print(message, markup=False, highlight=False, soft_wrap=True)

    def status_line(self) -> str:
        """One plain line: step/total, rates, the stats and the estimated time left."""
        parts = [f"step {self._counter()} ({self._percent():.1f}%)", *self._stats_parts()]
        steps_per_second = self._steps_rate.rate()
        if steps_per_second > 0 and self.step < self.total_steps:
            left = (self.total_steps - self.step) / steps_per_second
            parts.append(f"eta {_format_duration(left)}")
        return " | ".join(parts)

    def close(self) -> None:
        """Show the final state and release the console; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        if self._live or self._plain:
            self._show()
        if self._bar is not None:
            self._bar.stop()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------

    def _show(self) -> None:
        self._steps_rate.update(self.step)
        if "updates" in self.stats:
            count = float(self.stats["updates"])
            if self._updates_rate is None:
                self._updates_rate = Rate(initial=count, clock=self._clock)
            self._updates_rate.update(count)
        if self._live:
            stats = " · ".join(self._stats_parts())
            self._bar.update(
                self._task, completed=self.step, counter=self._counter(), stats=stats
            )
        else:
            self.console.print(self.status_line(), markup=False, highlight=False, soft_wrap=True)

    def _counter(self) -> str:
        return f"{self.step:,}/{self.total_steps:,}"

    def _percent(self) -> float:
        return 100.0 * self.step / self.total_steps if self.total_steps > 0 else 100.0

    def _stats_parts(self) -> list[str]:
        parts = [f"{_format_rate(self._steps_rate.rate())} steps/s"]
        if self._updates_rate is not None:
            parts.append(f"{_format_rate(self._updates_rate.rate())} upd/s")
        for key, value in self.stats.items():
            if key != "updates":
                parts.append(f"{key} {_format_value(value)}")
        return parts


def _make_bar(console: Any, refresh_per_second: float) -> Any:
    from rich.progress import (
        BarColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    return RichProgress(
        TextColumn("{task.fields[counter]}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[stats]}", markup=False),
        console=console,
        refresh_per_second=refresh_per_second,
    )


def _format_value(value: Any) -> str:
    """Compact text for a stat: ints as they are, other numbers with 4 significant digits."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value)


def _format_rate(rate: float) -> str:
    return f"{rate / 1000:.1f}k" if rate >= 1000 else f"{rate:.1f}"


def _format_duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
