"""Console progress of a run: a rate estimator over a sliding window and the live one-line bar
(plain status lines when the console is not a terminal)."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["Progress", "Rate"]

Clock = Callable[[], float]

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
    """Console progress of a run: a live one-line bar on a terminal, plain status lines otherwise.

    `update(step, stats)` is cheap enough to call every env step: it merges `stats` (the latest
    value of each key is kept, so an episode return shown once stays visible) and redraws at most
    `refresh_per_second` times a second, from the caller's thread (no refresh thread). On a
    non-terminal console (CI, a redirected stdout) it prints one plain line at the first update,
    then every `plain_interval` seconds, and at close. `enabled=False` shows no progress at all;
    `log` still prints (above the bar while it is live).

    The bar line fits the console width. It always keeps, in this order of priority, step/total,
    the percentage, the ETA, env steps/s and gradient updates/s (from a running count under the
    stats key `"updates"`); every other stat follows as `key value`, in the order first given, as
    far as they fit: the last ones are dropped whole, never cut. The bar graphic gets what is left
    (`_BAR_MIN` to `_BAR_MAX` cells; kept at its minimum before any stat is shown, dropped when
    even that does not fit).

    The first `prefill` steps of a run are random-policy steps, much faster than training ones.
    The ETA of the steps after the prefill uses a rate window that starts when the step reaches
    `prefill` (at the start when a resumed run is already past it), so prefill steps never speed
    it up. While the run is still in the prefill the line shows the time left in the prefill, at
    the prefill's own speed, and `eta ?` for the run. The shown steps/s is the recent rate over
    all steps.
    """

    def __init__(
        self,
        total_steps: int,
        initial_step: int = 0,
        enabled: bool = True,
        console: Any = None,
        *,
        prefill: int = 0,
        plain_interval: float = 30.0,
        refresh_per_second: float = 4.0,
        clock: Clock = time.monotonic,
    ) -> None:
        from rich.console import Console

        self.console = console if console is not None else Console()
        self.total_steps = int(total_steps)
        self.prefill = int(prefill)
        self.step = int(initial_step)
        self.stats: dict[str, Any] = {}
        self._clock = clock
        self._steps_rate = Rate(initial=self.step, clock=clock)  # shown: recent, all steps
        # Rate for the ETA of the steps after the prefill: made when the step reaches `prefill`.
        self._eta_rate: Rate | None = self._steps_rate if self.step >= self.prefill else None
        self._updates_rate: Rate | None = None  # made at the first "updates" value
        self._live = enabled and self.console.is_terminal
        self._plain = enabled and not self._live
        self._interval = 1.0 / refresh_per_second if self._live else plain_interval
        self._last_shown = -math.inf
        self._closed = False
        self._line = self._snapshot()  # what the bar shows
        self.renderable = _BarRenderable(self)
        """The live bar as a rich renderable; it lays out the last shown state at any width."""
        self._display: Any = None
        if self._live:
            from rich.live import Live

            # No auto-refresh thread: `update` refreshes, so a render never sees a half update.
            self._display = Live(
                self.renderable, console=self.console, auto_refresh=False, transient=False
            )
            self._display.start()

    def update(self, step: int, stats: Mapping[str, Any] | None = None) -> None:
        """Record the current env step and the latest stats; redraw when it is time."""
        self.step = int(step)
        if self._eta_rate is None and self.step >= self.prefill:
            self._eta_rate = Rate(initial=self.step, clock=self._clock)  # training starts now
        if stats:
            self.stats.update(stats)
        if not (self._live or self._plain) or self._closed:
            return
        now = self._clock()
        if now - self._last_shown < self._interval:
            return
        self._last_shown = now
        self._show()

    def log(self, message: str) -> None:
        """Print a line (above the bar when it is live)."""
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def status_line(self) -> str:
        """One plain line: step/total, rates, the stats and the estimated time left."""
        parts = [f"step {self._counter()} ({self._percent():.1f}%)", *self._rate_parts()]
        parts += self._extra_parts()
        parts += self._eta_parts()
        return " | ".join(parts)

    def close(self) -> None:
        """Show the final state once and release the console; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        if self._live:
            self._show(refresh=False)
            self._display.stop()  # draws the final line once more, in place, and leaves it
        elif self._plain:
            self._show()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------

    def _show(self, refresh: bool = True) -> None:
        self._steps_rate.update(self.step)
        if self._eta_rate is not None and self._eta_rate is not self._steps_rate:
            self._eta_rate.update(self.step)
        if "updates" in self.stats:
            count = float(self.stats["updates"])
            if self._updates_rate is None:
                self._updates_rate = Rate(initial=count, clock=self._clock)
            self._updates_rate.update(count)
        if self._live:
            self._line = self._snapshot()
            if refresh:
                self._display.refresh()
        else:
            self.console.print(self.status_line(), markup=False, highlight=False, soft_wrap=True)

    def _snapshot(self) -> _Line:
        required = [f"{self._percent():.1f}%", *self._eta_parts(), *self._rate_parts()]
        return _Line(self._counter(), self._fraction(), required, self._extra_parts())

    def _counter(self) -> str:
        return f"{self.step:,}/{self.total_steps:,}"

    def _fraction(self) -> float:
        return min(1.0, max(0.0, self.step / self.total_steps)) if self.total_steps > 0 else 1.0

    def _percent(self) -> float:
        return 100.0 * self.step / self.total_steps if self.total_steps > 0 else 100.0

    def _eta_parts(self) -> list[str]:
        """The ETA; while in the prefill, the prefill's time left and an unknown run ETA."""
        if self.step >= self.total_steps:
            return ["eta 0:00:00"]
        if self.step < self.prefill or self._eta_rate is None:
            rate = self._steps_rate.rate()  # nothing but prefill steps so far
            left = _format_duration((self.prefill - self.step) / rate) if rate > 0 else "?"
            return [f"prefill {left} left", "eta ?"]
        rate = self._eta_rate.rate()
        if rate <= 0:
            return ["eta ?"]
        return [f"eta {_format_duration((self.total_steps - self.step) / rate)}"]

    def _rate_parts(self) -> list[str]:
        parts = [f"{_format_rate(self._steps_rate.rate())} steps/s"]
        if self._updates_rate is not None:
            parts.append(f"{_format_rate(self._updates_rate.rate())} upd/s")
        return parts

    def _extra_parts(self) -> list[str]:
        return [f"{k} {_format_value(v)}" for k, v in self.stats.items() if k != "updates"]


class _Line:
    """One shown state of the bar: the counter, the done fraction, the parts it must keep
    (percent, ETA, rates) and the extra stats, highest priority first. Replaced whole, never
    changed, so a render from any thread sees one consistent state."""

    __slots__ = ("counter", "fraction", "required", "extras")

    def __init__(self, counter: str, fraction: float, required: list[str], extras: list[str]):
        self.counter = counter
        self.fraction = fraction
        self.required = tuple(required)
        self.extras = tuple(extras)


_SEPARATOR = " · "
_BAR_MIN = 10  # the bar graphic's cells before any extra stat is shown; narrower: no bar
_BAR_MAX = 40


class _BarRenderable:
    """Lays out a Progress's last shown `_Line` in `options.max_width` cells:
    `counter [bar] percent · eta · steps/s · upd/s · stat · stat …`."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def __rich_console__(self, console: Any, options: Any) -> Any:
        yield _layout(self._progress._line, options.max_width)


def _layout(line: _Line, width: int) -> Any:
    from rich.cells import cell_len
    from rich.text import Text

    percent, *rest = line.required
    separator = _SEPARATOR
    room = width - cell_len(line.counter) - 1 - cell_len(percent)
    room -= sum(len(separator) + cell_len(part) for part in rest)
    if room < 0:  # narrow: plain spaces between the required parts, nothing else
        separator = " "
        room += (len(_SEPARATOR) - len(separator)) * len(rest)
    bar = _BAR_MIN if room >= _BAR_MIN + 1 else 0
    room -= bar + 1 if bar else 0
    extras = []
    for part in line.extras:  # highest priority first; the first that does not fit ends it
        need = len(_SEPARATOR) + cell_len(part)
        if need > room:
            break
        extras.append(part)
        room -= need
    if bar:
        bar = min(_BAR_MAX, bar + room)

    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(line.counter, style="progress.download")
    if bar:
        done = round(bar * line.fraction)
        style = "bar.finished" if line.fraction >= 1.0 else "bar.complete"
        text.append(" ")
        text.append("━" * done, style=style)
        text.append("━" * (bar - done), style="bar.back")
    text.append(" ")
    text.append(percent, style="progress.percentage")
    for part in rest:
        text.append(separator, style="dim")
        rate = part.endswith("/s")
        text.append(part, style="progress.data.speed" if rate else "progress.remaining")
    for part in extras:
        text.append(separator, style="dim")
        text.append(part)
    if text.cell_len > width:  # even the required parts do not fit: cut the lowest ones
        text.truncate(width, overflow="ellipsis")
    return text


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
