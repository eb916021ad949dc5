"""What stored steps take: bytes per step of a {key: (shape, dtype)} spec, and the console line
that says where a full replay's bytes go (RAM, or RAM plus memory-mapped ring files)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from reverie.replay.disk import format_bytes, on_disk

StepSpec = dict[str, tuple[tuple[int, ...], np.dtype]]


def estimate_bytes(step_spec: StepSpec, capacity: int) -> int:
    """Bytes that `capacity` steps of the given {key: (shape, dtype)} spec take."""
    per_step = sum(math.prod(shape) * np.dtype(dtype).itemsize for shape, dtype in step_spec.values())
    return int(capacity) * per_step


def describe_steps(step_spec: StepSpec, capacity: int, storage: str = "memory", folder: Any = None) -> str:
    """One line, e.g. 'replay: capacity 1,000 steps × 20 B/step = 19.53 KiB (RAM)'; with
    storage=disk it splits the total into RAM and the memory-mapped files in `folder`."""
    per_step = estimate_bytes(step_spec, 1)
    line = f"replay: capacity {capacity:,} steps × {per_step:,} B/step = {format_bytes(per_step * capacity)}"
    if storage == "memory":
        return line + " (RAM)"
    disk = estimate_bytes({k: v for k, v in step_spec.items() if on_disk(*v)}, capacity)
    return (f"{line}: {format_bytes(per_step * capacity - disk)} in RAM, {format_bytes(disk)} on disk "
            f"(memory-mapped in {folder})")
