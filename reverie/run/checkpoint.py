"""Checkpoints: atomic writes, the last K kept, safe loading (`weights_only=True`).

Layout under `logdir/checkpoints/`:
    ckpt_000012345.pt     agent weights + optimiser + normalisers + slow critic, counters (steps,
                          updates, train-ratio credit), RNG states, the replay's counters, RNG and
                          online queue; the replay's steps live in `logdir/replay/` (replay_store.py)

Every file is written to a temporary name in the same folder, flushed, fsynced and renamed, so a
crash leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError

CKPT_PATTERN = re.compile(r"^ckpt_(\d{9})\.pt$")


@contextlib.contextmanager
def atomic_file(path: Path):
    """Yield a binary file to write `path` through: written under a temporary name in the same
    folder, flushed, fsynced and renamed on success; removed if the writer raises."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    with atomic_file(path) as f:
        f.write(payload)


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    if not Path(folder).is_dir():
        return []
    return sorted(p for p in Path(folder).iterdir() if CKPT_PATTERN.match(p.name))


def save_checkpoint(folder: Path, step: int, payload: dict[str, Any], keep: int = 3) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path = folder / f"ckpt_{step:09d}.pt"
    atomic_write_bytes(path, buffer.getvalue())
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def load_latest_checkpoint(folder: Path, map_location="cpu") -> tuple[Path, dict] | None:
    """Newest checkpoint that loads; a corrupt one gives a warning and falls back to the previous."""
    for path in reversed(list_checkpoints(folder)):
        try:
            return path, torch.load(path, map_location=map_location, weights_only=True)
        except Exception as error:  # noqa: BLE001 - any failure to unpickle means unusable
            if "weights_only" in str(error) or "Unsupported global" in str(error):
                raise CheckpointError(
                    f"checkpoint {path} holds objects that could run code when loaded and was refused; "
                    "only load checkpoints you trust, or delete it to fall back to an older one"
                ) from None
            warnings.warn(f"checkpoint {path.name} is unreadable ({type(error).__name__}); trying an older one")
    return None
