"""Videos: the open-loop prediction grid (truth / model / error) and the encoders that write it.

Grid (what the world model predicts, next to what happened):

    openloop_grid(truth, pred, max_samples=4) -> (T, 3*H, S*W, C) uint8
        rows: truth, model prediction, error; columns: up to `max_samples` sequences.
    openloop_videos(report) -> {"openloop/{key}": grid} for every image key of `Agent.report`.

The error row shows `(pred − truth + 256) // 2` per pixel and channel: mid-grey (128) where the
prediction equals the truth, brighter where the model predicts too bright, darker where too dark
(0 and 255 at the extremes ∓255).

Encoders, all taking (T, H, W, C) uint8 frames with C in (1, 3, 4):

    write_gif(path, frames, fps)      looping GIF through Pillow (alpha dropped).
    write_mp4(path, frames, fps)      H.264 MP4 through imageio + imageio-ffmpeg, padded to even
                                      sizes; returns False (and warns once) when they are missing.
    add_tensorboard_gif(tb, tag, frames, step, fps)
                                      an animated GIF as a TensorBoard image summary (needs no moviepy).
    write_video(logdir, step, name, frames, fps, scale, tb)
                                      all of the above as `videos/{name}_{step:09d}.{gif,mp4}`.

Every file is written atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError

__all__ = [
    "add_tensorboard_gif",
    "check_frames",
    "encode_gif",
    "openloop_grid",
    "openloop_videos",
    "safe_video_name",
    "upscale",
    "write_gif",
    "write_mp4",
    "write_video",
]

_PREFIX, _TRUTH, _PRED = "openloop/", "/truth", "/pred"


# --------------------------------------------------------------------------------------------
# Open-loop grid


def _as_uint8_array(x: Any, what: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, on any device
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 images, got dtype {x.dtype}")
    return x


def openloop_grid(truth: Any, pred: Any, max_samples: int = 4) -> np.ndarray:
    """Truth, prediction and error of image sequences as one video.

    Args:
        truth, pred: (B, T, H, W, C) uint8 torch tensors or numpy arrays, C in (1, 3, 4).
        max_samples: at most this many sequences (the first ones) side by side.

    Returns:
        (T, 3*H, S*W, C) uint8 with S = min(B, max_samples); rows top to bottom: truth, model
        prediction, error `(pred − truth + 256) // 2` (128 = no error). C is kept as given
        (a grey input gives a grey grid).
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
    return np.ascontiguousarray(rows.transpose(2, 1, 3, 0, 4, 5).reshape(T, R * H, S * W, C))


def openloop_videos(report: Mapping[str, Any], max_samples: int = 4) -> dict[str, np.ndarray]:
    """`{"openloop/{key}": openloop_grid(truth, pred)}` for every image key of `Agent.report`.

    An image key is one whose `openloop/{key}/truth` and `openloop/{key}/pred` are both 5-D
    uint8 (B, T, H, W, C); vector keys and the `/mse` entries are skipped. Keys keep the report's
    order. Each grid is (T, 3*H, S*W, C) uint8, ready for `MetricsWriter.video(step, name, grid)`.
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


# --------------------------------------------------------------------------------------------
# Frames


def check_frames(frames: Any, name: str = "video") -> np.ndarray:
    """(T, H, W, C) uint8 numpy array with C in (1, 3, 4) and T ≥ 1, else ValueError."""
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.dtype != np.uint8 or frames.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"video {name!r} must be a (T, H, W, C) uint8 array with C in (1, 3, 4), "
            f"got shape {frames.shape} and dtype {frames.dtype}"
        )
    if frames.shape[0] == 0:
        raise ValueError(f"video {name!r} has no frames")
    return frames


def upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement of (T, H, W, C) frames by an integer factor."""
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    if scale == 1:
        return frames
    return frames.repeat(int(scale), axis=1).repeat(int(scale), axis=2)


def _rgb(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3): grey repeated to three channels, alpha dropped."""
    if frames.shape[-1] == 1:
        return np.repeat(frames, 3, axis=-1)
    return np.ascontiguousarray(frames[..., :3])


def safe_video_name(name: str) -> str:
    """A file-name-safe form of a video tag: runs of other characters than [A-Za-z0-9_.-] → "_"."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# --------------------------------------------------------------------------------------------
# GIF


def encode_gif(frames: np.ndarray, fps: float = 20) -> bytes:
    """A looping animated GIF of (T, H, W, C) uint8 frames (Pillow; alpha dropped)."""
    try:
        from PIL import Image
    except ImportError as error:
        raise UserError("writing videos needs Pillow: pip install pillow") from error
    if frames.shape[-1] == 1:
        images = [Image.fromarray(frame[..., 0]) for frame in frames]
    else:
        images = [Image.fromarray(np.ascontiguousarray(frame[..., :3])) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(1, round(1000 / fps)),
        loop=0,
    )
    return buffer.getvalue()


def write_gif(path: Path, frames: np.ndarray, fps: float = 20) -> None:
    """Write (T, H, W, C) uint8 frames as a looping GIF, atomically (temp file + rename)."""
    _write_atomic(Path(path), encode_gif(frames, fps))


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


# --------------------------------------------------------------------------------------------
# MP4

_mp4_warned = False


def _warn_no_mp4(reason: str) -> None:
    global _mp4_warned
    if not _mp4_warned:
        _mp4_warned = True
        warnings.warn(f"videos are written as GIF only: {reason}", RuntimeWarning, stacklevel=3)


def write_mp4(path: Path, frames: np.ndarray, fps: float = 20) -> bool:
    """Write (T, H, W, C) uint8 frames as an H.264 MP4 (yuv420p) through imageio's ffmpeg plugin.

    Frames are padded with black on the right/bottom to even sizes (H.264 in yuv420p needs them);
    grey is shown as RGB and alpha dropped. Returns False without writing, with a warning the
    first time, when imageio or imageio-ffmpeg (or its ffmpeg binary) is missing.
    """
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg
    except ImportError:
        _warn_no_mp4("MP4 needs imageio and imageio-ffmpeg (pip install imageio imageio-ffmpeg)")
        return False
    try:
        imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as error:
        _warn_no_mp4(f"imageio-ffmpeg found no ffmpeg binary ({error})")
        return False
    frames = _rgb(frames)
    T, H, W, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)))  # (T, H', W', 3), even sizes
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial" + path.suffix)  # ffmpeg picks the container by suffix
    writer = imageio.get_writer(
        str(partial), format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p",
        macro_block_size=2, ffmpeg_log_level="error",
    )
    try:
        for frame in frames:
            writer.append_data(frame)
    finally:
        writer.close()
    os.replace(partial, path)
    return True


# --------------------------------------------------------------------------------------------
# TensorBoard


def add_tensorboard_gif(tb: Any, tag: str, frames: np.ndarray, step: int, fps: float = 20) -> None:
    """Log (T, H, W, C) uint8 frames to TensorBoard as an animated GIF in an image summary.

    `tb` is a `torch.utils.tensorboard.SummaryWriter`. TensorBoard's image dashboard shows the GIF
    animated; this is what `add_video` does too, but without needing moviepy to encode.
    """
    from tensorboard.compat.proto.summary_pb2 import Summary

    T, H, W, C = frames.shape
    image = Summary.Image(height=H, width=W, colorspace=1 if C == 1 else 3,
                          encoded_image_string=encode_gif(frames, fps))
    summary = Summary(value=[Summary.Value(tag=tag, image=image)])
    file_writer = tb._get_file_writer() if hasattr(tb, "_get_file_writer") else tb.file_writer
    file_writer.add_summary(summary, int(step))
    tb.flush()


# --------------------------------------------------------------------------------------------
# All of them


def write_video(
    logdir: str | Path,
    step: int,
    name: str,
    frames: Any,
    fps: float = 20,
    scale: int = 1,
    tb: Any = None,
    mp4: bool = True,
) -> Path:
    """Write `frames` (T, H, W, C) uint8 as `logdir/videos/{safe name}_{step:09d}.gif` and `.mp4`
    (when imageio-ffmpeg is there and `mp4`), and to TensorBoard under the tag `name` when `tb`
    (a SummaryWriter) is given. `scale` enlarges the frames by an integer factor (nearest
    neighbour). Returns the GIF's path."""
    frames = upscale(check_frames(frames, name), scale)
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    stem = f"{safe_video_name(name)}_{int(step):09d}"
    folder = Path(logdir) / "videos"
    gif = folder / f"{stem}.gif"
    write_gif(gif, frames, fps)
    if mp4:
        write_mp4(folder / f"{stem}.mp4", frames, fps)
    if tb is not None:
        add_tensorboard_gif(tb, name, frames, step, fps)
    return gif
