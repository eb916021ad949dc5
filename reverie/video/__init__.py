"""Videos: the open-loop prediction grid (truth / model / error) and the encoders that write it.

Grid (what the world model predicts, next to what happened):

    openloop_grid(truth, pred, max_samples=4) -> (T, 3*H, L + S*W, C) uint8
        rows: truth, model prediction, error; columns: up to `max_samples` sequences, after a
        left-hand strip L = `label_width()` pixels wide (32) naming each row ("truth", "model",
        "error"; `labels=False` leaves it out: (T, 3*H, S*W, C)).
    openloop_videos(report) -> {"openloop/{key}": grid} for every image key of `Agent.report`.
    label_rows(frames, labels) -> the same frames with that label strip on the left.

The error row shows `(pred − truth + 256) // 2` per pixel and channel: mid-grey (128) where the
prediction equals the truth, brighter where the model predicts too bright, darker where too dark
(0 and 255 at the extremes ∓255).

Encoders, all taking (T, H, W, C) uint8 frames with C in (1, 3, 4):

    write_gif(path, frames, fps)      looping GIF through Pillow (alpha dropped).
    write_mp4(path, frames, fps)      H.264 MP4 through imageio + imageio-ffmpeg; returns False
                                      (and warns once) when they are missing.
    add_tensorboard_gif(tb, tag, frames, step, fps)
                                      an animated GIF as a TensorBoard image summary (needs no moviepy).
    write_video(logdir, step, name, frames, fps, scale, tb)
                                      all of the above as `videos/{name}_{step:09d}.{gif,mp4}`.

The GIF and the MP4 of a video hold the same frames, at the same rate and size:

- Frames: every frame is its own GIF frame, also where consecutive frames are equal (Pillow's
  own GIF writer would merge those into one longer frame), so a GIF of T frames has T frames.
- Size: every encoder pads frames with black on the right/bottom to even sizes (H.264 in yuv420p
  needs them; the MP4 is never rescaled to a macro-block multiple), so a 9×7 video is 10×8 in
  every format.
- Rate: a GIF frame lasts a whole number of centiseconds, so only 100/k frames per second are
  exact. `video_fps(fps)` picks that rate (k = round(100 / fps), at least 2: browsers show
  shorter GIF delays as 100 ms, so 50 fps is the fastest), and both formats use it: the default
  20 fps (50 ms) and 10, 25 and 50 fps stay as asked, 15 fps becomes 100/7 ≈ 14.29, 30 becomes
  100/3 ≈ 33.33, 24 becomes 25.
- What still differs is colour only: the GIF holds up to 256 colours a frame, the MP4 is lossy
  H.264 in yuv420p.

Every file is written atomically (a temporary file, then a rename).
"""

from .files import (
    add_tensorboard_gif,
    check_frames,
    encode_gif,
    even_frames,
    safe_video_name,
    upscale,
    video_fps,
    write_gif,
    write_mp4,
    write_video,
)
from .grid import ROW_LABELS, label_rows, label_width, openloop_grid, openloop_videos

__all__ = [
    "ROW_LABELS",
    "add_tensorboard_gif",
    "check_frames",
    "encode_gif",
    "even_frames",
    "label_rows",
    "label_width",
    "openloop_grid",
    "openloop_videos",
    "safe_video_name",
    "upscale",
    "video_fps",
    "write_gif",
    "write_mp4",
    "write_video",
]
