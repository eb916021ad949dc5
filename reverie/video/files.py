"""Frames and their encoders: GIF, MP4 and TensorBoard, each written atomically, all holding the
same frames at the same rate and size (see the package docstring)."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ReverieWarning, UserError


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


def even_frames(frames: np.ndarray) -> np.ndarray:
    """(T, H', W', C): padded with black on the right/bottom to even H' and W' (what H.264 in
    yuv420p needs). Every encoder here pads, so a video has one size in all formats."""
    T, H, W, C = frames.shape
    if H % 2 == 0 and W % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)))


GIF_MIN_DELAY_CS = 2  # browsers show GIF frames of 0 or 1 centisecond for 10 centiseconds


def _gif_delay_cs(fps: float) -> int:
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    return int(min(65535, max(GIF_MIN_DELAY_CS, round(100 / fps))))


def video_fps(fps: float) -> float:
    """The rate videos asked for at `fps` are written at, in GIF and MP4 alike: 100/k frames per
    second for the whole number of centiseconds k = round(100 / fps), 2 ≤ k ≤ 65535 (a GIF frame
    lasts whole centiseconds, and browsers play shorter delays than 2 as 10). 20 fps (the
    default), 10, 25 and 50 are exact; 15 → 100/7 ≈ 14.29, 30 → 100/3 ≈ 33.33, 24 → 25, above
    50 → 50."""
    return 100 / _gif_delay_cs(fps)


def safe_video_name(name: str) -> str:
    """A file-name-safe form of a video tag: runs of other characters than [A-Za-z0-9_.-] → "_"."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# --------------------------------------------------------------------------------------------
# GIF


def encode_gif(frames: np.ndarray, fps: float = 20) -> bytes:
    """A looping animated GIF of (T, H, W, C) uint8 frames (Pillow; alpha dropped).

    Every frame is kept as its own GIF frame (equal neighbours too, which Pillow's `save_all`
    would merge), each `100 / video_fps(fps)` ms long, each with its own 256-colour palette
    (RGB frames quantised as Pillow does; grey frames exact); frames are padded to even sizes
    like the MP4's (`even_frames`).
    """
    try:
        from PIL import GifImagePlugin, Image
    except ImportError as error:
        raise UserError("writing videos needs Pillow: pip install pillow") from error
    delay_ms = 10 * _gif_delay_cs(fps)
    frames = even_frames(frames)
    T, H, W, C = frames.shape
    grey = bytes(v for v in range(256) for _ in range(3))  # palette index v → (v, v, v)
    chunks = [
        b"GIF89a" + _u16(W) + _u16(H) + b"\x00\x00\x00",  # logical screen, no global colour table
        b"!\xff\x0bNETSCAPE2.0\x03\x01" + _u16(0) + b"\x00",  # loop forever
    ]
    for frame in frames:
        if C == 1:
            image = Image.fromarray(np.ascontiguousarray(frame[..., 0]))
            image.putpalette(grey)  # "L" → "P" with the grey ramp: the values stay exact
        else:
            image = Image.fromarray(np.ascontiguousarray(frame[..., :3])).convert(
                "P", palette=Image.Palette.ADAPTIVE)  # what Pillow's GIF writer does to RGB
        # One frame: graphic control extension (its delay), image descriptor, local colour table
        # and LZW data, through Pillow's public per-frame GIF writer.
        chunks += GifImagePlugin.getdata(image, (0, 0), duration=delay_ms, include_color_table=True)
    chunks.append(b";")
    return b"".join(chunks)


def _u16(value: int) -> bytes:
    return int(value).to_bytes(2, "little")


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
        warnings.warn(f"videos are written as GIF only: {reason}", ReverieWarning, stacklevel=3)


def write_mp4(path: Path, frames: np.ndarray, fps: float = 20) -> bool:
    """Write (T, H, W, C) uint8 frames as an H.264 MP4 (yuv420p) through imageio's ffmpeg plugin.

    Frames are padded with black on the right/bottom to even sizes (H.264 in yuv420p needs them;
    `even_frames`, as for the GIF) and never rescaled; grey is shown as RGB and alpha dropped.
    The rate is `video_fps(fps)`, the GIF's, so both hold the same T frames for the same time.
    Returns False without writing, with a warning the first time, when imageio or
    imageio-ffmpeg (or its ffmpeg binary) is missing.
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
    rate = video_fps(fps)  # e.g. 100/7: imageio-ffmpeg 0.8 hands ffmpeg the exact fraction "100/7"
    frames = even_frames(_rgb(frames))  # (T, H', W', 3), even sizes
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial" + path.suffix)  # ffmpeg picks the container by suffix
    writer = imageio.get_writer(
        str(partial), format="FFMPEG", mode="I", fps=rate, codec="libx264", pixelformat="yuv420p",
        macro_block_size=2, ffmpeg_log_level="error",  # 2, not 16: no rescaling to multiples of 16
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
    animated; this is what `add_video` does too, but without needing moviepy to encode. It is the
    GIF `encode_gif` writes: padded to even sizes, at `video_fps(fps)`.
    """
    from tensorboard.compat.proto.summary_pb2 import Summary

    T, H, W, C = even_frames(frames).shape
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
    neighbour). All of them hold the same frames, padded to the same even size, at the same rate
    `video_fps(fps)` (20 fps, the default, is exact; see the module docstring). Returns the
    GIF's path."""
    frames = even_frames(upscale(check_frames(frames, name), scale))
    video_fps(fps)  # ValueError unless fps > 0
    stem = f"{safe_video_name(name)}_{int(step):09d}"
    folder = Path(logdir) / "videos"
    gif = folder / f"{stem}.gif"
    write_gif(gif, frames, fps)
    if mp4:
        write_mp4(folder / f"{stem}.mp4", frames, fps)
    if tb is not None:
        add_tensorboard_gif(tb, name, frames, step, fps)
    return gif
