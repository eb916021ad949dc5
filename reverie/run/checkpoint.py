"""Checkpoints: atomic writes, the last K kept, safe loading (`weights_only=True`).

Layout under `logdir/checkpoints/`:
    ckpt_000012345.pt     agent weights + optimiser + normalisers + slow critic, counters (steps,
                          updates, train-ratio credit), RNG states, the replay's counters, RNG and
                          online queue; the replay's steps live in `logdir/replay/` (replay_store.py)

Every file is written to a temporary name in the same folder, flushed, fsynced and renamed, so a
crash leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, warn
from ..files import atomic_write_bytes

CKPT_PATTERN = re.compile(r"^ckpt_(\d{9})\.pt$")


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    if not Path(folder).is_dir():
        return []
    return sorted(p for p in Path(folder).iterdir() if CKPT_PATTERN.match(p.name))


def checkpoint_name(step: int) -> str:
    return f"ckpt_{step:09d}.pt"


def save_checkpoint(folder: Path, step: int, payload: dict[str, Any], keep: int = 3) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path = folder / checkpoint_name(step)
    atomic_write_bytes(path, buffer.getvalue())
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """One checkpoint file (`weights_only=True`), or `CheckpointError` naming it."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - missing, torn or not a checkpoint
        raise CheckpointError(f"checkpoint {path} cannot be loaded ({type(error).__name__}); restore it from a "
                              "backup, or start a new logdir") from None


CORRUPT_FOLDER = "corrupt"  # unreadable checkpoints are moved here, out of the way of the next resume


def load_latest_checkpoint(folder: Path, map_location="cpu") -> tuple[Path, dict] | None:
    """The newest checkpoint that loads, or None when the folder holds none.

    Unreadable checkpoints newer than it are moved to `folder/corrupt/` with a one-line warning,
    so no later resume tries them again. When every checkpoint is unreadable, nothing is moved and
    `CheckpointError` says so.
    """
    folder = Path(folder)
    candidates = list(reversed(list_checkpoints(folder)))
    unreadable: list[tuple[Path, str]] = []
    for path in candidates:
        try:
            payload = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as error:  # noqa: BLE001 - any failure to unpickle means unusable
            if re.search(r"unsupported global", str(error), re.IGNORECASE):  # not garbage: a pickled callable
                raise CheckpointError(
                    f"checkpoint {path} holds objects that could run code when loaded and was refused; "
                    "only load checkpoints you trust, or delete it to fall back to an older one"
                ) from None
            unreadable.append((path, type(error).__name__))
            continue
        for bad, reason in unreadable:
            moved = _move_aside(bad)
            warn(f"checkpoint {bad.name} is unreadable ({reason}); moved to {moved} and resumed from {path.name}")
        return path, payload
    if unreadable:
        count = "the only checkpoint" if len(unreadable) == 1 else f"all {len(unreadable)} checkpoints"
        reasons = ", ".join(f"{p.name}: {r}" for p, r in unreadable)
        raise CheckpointError(
            f"{count} in {folder} {'is' if len(unreadable) == 1 else 'are'} unreadable ({reasons}); restore "
            "them from a backup, or delete them to start from the replay on disk with a new model"
        )
    return None


def _move_aside(path: Path) -> Path:
    target_dir = path.parent / CORRUPT_FOLDER
    target_dir.mkdir(exist_ok=True)
    target = target_dir / path.name
    os.replace(path, target)
    return target


def describe_state_mismatch(expected: dict[str, torch.Tensor], found: dict[str, Any], limit: int = 3) -> str:
    """The first differences between a model's state dict and a checkpoint's: tensors of other
    shapes (`name (512,) in the checkpoint vs (64,) here`), then missing and unexpected names."""
    shapes = [f"{name} {tuple(found[name].shape)} in the checkpoint vs {tuple(tensor.shape)} here"
              for name, tensor in expected.items()
              if name in found and hasattr(found[name], "shape") and tuple(found[name].shape) != tuple(tensor.shape)]
    missing = [f"{name} missing from the checkpoint" for name in expected if name not in found]
    extra = [f"{name} not in this model" for name in found if name not in expected]
    problems = shapes + missing + extra
    more = f" and {len(problems) - limit} more" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


def load_agent_state(agent: torch.nn.Module, payload: dict, path: Path, config_path: Path) -> None:
    """Load a checkpoint's agent weights, or raise `CheckpointError` naming the first mismatching
    tensors and the fix."""
    state = payload.get("agent") if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds no agent weights; it is not a Reverie checkpoint")
    expected = torch.nn.Module.state_dict(agent)  # the weights alone, without the optimisers' state
    found = state.get("modules", state)
    problems = describe_state_mismatch(expected, found if isinstance(found, dict) else {})
    if problems:
        raise CheckpointError(
            f"checkpoint {path} was made by another model than {config_path} describes ({problems}); "
            "use the config.yaml saved with that checkpoint, or start a new logdir"
        )
    try:
        agent.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} does not load into this model ({str(error).splitlines()[0]})") from None
