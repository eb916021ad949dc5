"""The open-loop prediction grid (rows truth / model / error, one column per sequence) with its
row labels; see the package docstring."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import UserError
from .files import check_frames

_PREFIX, _TRUTH, _PRED = "openloop/", "/truth", "/pred"
ROW_LABELS = ("truth", "model", "error")


# --------------------------------------------------------------------------------------------
# Open-loop grid


def _as_uint8_array(x: Any, what: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, on any device
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 images, got dtype {x.dtype}")
    return x


def openloop_grid(truth: Any, pred: Any, max_samples: int = 4, labels: bool = True) -> np.ndarray:
    """Truth, prediction and error of image sequences as one video.

    Args:
        truth, pred: (B, T, H, W, C) uint8 torch tensors or numpy arrays, C in (1, 3, 4).
        max_samples: at most this many sequences (the first ones) side by side.
        labels: put a strip naming the rows ("truth", "model", "error") on the left.

    Returns:
        (T, 3*H, L + S*W, C) uint8 with S = min(B, max_samples) and L = `label_width()` (0 without
        labels); rows top to bottom: truth, model prediction, error `(pred − truth + 256) // 2`
        (128 = no error). C is kept as given (a grey input gives a grey grid).
    """
    truth, pred = _as_uint8_array(truth, "truth"), _as_uint8_array(pred, "pred")
    if truth.ndim != 5 or truth.shape[-1] not in (1, 3, 4):
        raise ValueError(f"truth must be (B, T, H, W, C) with C in (1, 3, 4), got shape {truth.shape}")
    if pred.shape != truth.shape:
        raise ValueError(f"pred has shape {pred.shape} but truth has {truth.shape}")
    if max_samples < 1:
        raise ValueError(f"max_samples must be ≥ 1, got {max_samples}")
    S = min(truth.shape[0], int(max_samples))
    truth, pred = truth[:S], pred[:S]  # (S, T, H, W, C)
    error = ((pred.astype(np.int16) - truth.astype(np.int16) + 256) // 2).astype(np.uint8)
    rows = np.stack([truth, pred, error], axis=1)  # (S, 3, T, H, W, C)
    S, R, T, H, W, C = rows.shape
    # (T, rows, H, samples, W, C) → (T, 3H, SW, C)
    grid = np.ascontiguousarray(rows.transpose(2, 1, 3, 0, 4, 5).reshape(T, R * H, S * W, C))
    return label_rows(grid, ROW_LABELS) if labels else grid


# Row labels: Pillow's bitmap font (11 px tall, 6 px a character), white on black.
_LABEL_MARGIN = 1


def _label_font() -> Any:
    try:
        from PIL import ImageFont
    except ImportError as error:
        raise UserError("writing videos needs Pillow: pip install pillow") from error
    # The bitmap font is the same on every install (load_default() is a FreeType font where
    # Pillow has FreeType, ≥ 10.1) and stays crisp at this size.
    return getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)()


def label_width(labels: tuple[str, ...] = ROW_LABELS) -> int:
    """Width in pixels of the label strip `label_rows` adds: the widest label and a margin, even
    (so it keeps the parity of the frame width); 32 for the grid's labels."""
    font = _label_font()
    widest = max(font.getbbox(text)[2] for text in labels)
    width = widest + 2 * _LABEL_MARGIN
    return width + width % 2


def _label_strip(height: int, rows: int, channels: int, labels: tuple[str, ...]) -> np.ndarray:
    """(rows*height, label_width(labels), channels) uint8: label i centred in row i, each label
    clipped to its row (rows under 11 px show part of it)."""
    from PIL import Image, ImageDraw

    font, width = _label_font(), label_width(labels)
    strip = np.zeros((rows * height, width), np.uint8)
    for row, text in enumerate(labels):
        image = Image.new("L", (width, height), 0)
        left, top, right, bottom = ImageDraw.Draw(image).textbbox((0, 0), text, font=font)
        x = (width - (right - left)) // 2 - left
        y = (height - (bottom - top)) // 2 - top
        ImageDraw.Draw(image).text((x, y), text, fill=255, font=font)
        strip[row * height:(row + 1) * height] = np.asarray(image)
    strip = np.repeat(strip[..., None], channels, axis=-1)
    if channels == 4:
        strip[..., 3] = 255  # opaque
    return strip


def label_rows(frames: Any, labels: tuple[str, ...] | list[str] = ROW_LABELS) -> np.ndarray:
    """(T, R*H, W, C) uint8 frames made of R = len(labels) rows of equal height H, with a strip
    naming the rows on the left: (T, R*H, label_width(labels) + W, C). The frame count is kept."""
    frames = check_frames(frames, "labelled video")
    labels = tuple(str(text) for text in labels)
    T, height, width, channels = frames.shape
    if not labels or height % len(labels):
        raise ValueError(f"{height} pixels cannot be cut into {len(labels)} rows of equal height")
    strip = _label_strip(height // len(labels), len(labels), channels, labels)
    return np.concatenate([np.broadcast_to(strip, (T, *strip.shape)), frames], axis=2)


def openloop_videos(report: Mapping[str, Any], max_samples: int = 4) -> dict[str, np.ndarray]:
    """`{"openloop/{key}": openloop_grid(truth, pred)}` for every image key of `Agent.report`.

    An image key is one whose `openloop/{key}/truth` and `openloop/{key}/pred` are both 5-D
    uint8 (B, T, H, W, C); vector keys and the `/mse` entries are skipped. Keys keep the report's
    order. Each grid is (T, 3*H, label_width() + S*W, C) uint8 with its rows labelled, ready for
    `MetricsWriter.video(step, name, grid)`.
    """
    videos: dict[str, np.ndarray] = {}
    for name, truth in report.items():
        if not (name.startswith(_PREFIX) and name.endswith(_TRUTH)):
            continue
        key = name[len(_PREFIX):-len(_TRUTH)]
        pred = report.get(f"{_PREFIX}{key}{_PRED}")
        if pred is None or len(truth.shape) != 5 or str(truth.dtype) not in ("uint8", "torch.uint8"):
            continue
        videos[f"{_PREFIX}{key}"] = openloop_grid(truth, pred, max_samples)
    return videos
