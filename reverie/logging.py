"""What a run writes: `metrics.jsonl`, TensorBoard scalars, videos (console progress: `progress.py`).

Logdir layout (DESIGN §3): `metrics.jsonl` holds one JSON object per line, always with `"step"`;
TensorBoard event files go to `tensorboard/`; videos to `videos/{name}_{step:09d}.gif` and `.mp4`
(written by `reverie.video`).
A resumed run appends to the same files.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import UserError
from .progress import Progress, Rate  # noqa: F401  (kept importable from here)
from .video import write_gif, write_video  # noqa: F401  (write_gif: kept importable from here)

__all__ = ["METRICS_FILE", "MetricsWriter", "Progress", "Rate", "read_metrics"]

METRICS_FILE = "metrics.jsonl"


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
