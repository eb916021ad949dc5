"""Videos: the open-loop grid (truth / model / error) and the GIF, MP4 and TensorBoard encoders.
Recorded evaluation episodes and `reverie eval --video` end to end are in test_video_eval.py."""

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from reverie import video
from reverie.errors import ReverieWarning
from reverie.logging import MetricsWriter


def gif_frames(path) -> list[np.ndarray]:
    with Image.open(path) as gif:
        frames = []
        for index in range(gif.n_frames):
            gif.seek(index)
            frames.append(np.asarray(gif.convert("RGB")))
    return frames


# --------------------------------------------------------------------------------------------
# The grid


def test_grid_rows_are_truth_prediction_error_and_columns_are_samples():
    # B=2 sequences, T=2 steps, 1×2 grey images.
    truth = np.array([[[[[100], [0]]], [[[255], [10]]]],
                      [[[[1], [2]]], [[[3], [4]]]]], np.uint8)  # (2, 2, 1, 2, 1)
    pred = np.array([[[[[100], [255]]], [[[0], [20]]]],
                     [[[[1], [2]]], [[[3], [5]]]]], np.uint8)
    grid = video.openloop_grid(truth, pred, labels=False)  # no label strip: pixels at known columns
    assert grid.shape == (2, 3, 4, 1) and grid.dtype == np.uint8  # (T, 3H, S*W, C)
    # step 0, sample 0 (columns 0-1): truth, prediction, error = (pred - truth + 256) // 2
    assert grid[0, :, 0:2, 0].tolist() == [[100, 0], [100, 255], [128, 255]]
    # step 1, sample 0: 0 - 255 is the darkest error, +10 is 5 above mid-grey
    assert grid[1, :, 0:2, 0].tolist() == [[255, 10], [0, 20], [0, 133]]
    # step 1, sample 1 (columns 2-3): equal pixels are mid-grey, +1 rounds down to 128
    assert grid[1, :, 2:4, 0].tolist() == [[3, 4], [3, 5], [128, 128]]


def test_grid_keeps_colour_takes_tensors_and_limits_samples():
    truth = torch.randint(0, 256, (6, 3, 4, 5, 3), dtype=torch.uint8)  # (B, T, H, W, C)
    grid = video.openloop_grid(truth, truth.clone(), max_samples=4, labels=False)
    assert grid.shape == (3, 12, 20, 3)
    assert np.array_equal(grid[:, 0:4, 5:10], truth[1].numpy())  # sample 1, truth row
    assert np.array_equal(grid[:, 4:8, 15:20], truth[3].numpy())  # sample 3, prediction row
    assert (grid[:, 8:12] == 128).all()  # perfect prediction: an all mid-grey error row
    assert video.openloop_grid(truth, truth, max_samples=10, labels=False).shape == (3, 12, 30, 3)
    # With the labels (the default) a 32-pixel strip naming the rows comes first.
    assert video.openloop_grid(truth, truth, max_samples=10).shape == (3, 12, 32 + 30, 3)


def test_grid_rejects_mismatched_or_non_uint8_inputs():
    images = np.zeros((1, 2, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="pred has shape"):
        video.openloop_grid(images, images[:, :1])
    with pytest.raises(ValueError, match="uint8"):
        video.openloop_grid(images.astype(np.float32), images)
    with pytest.raises(ValueError, match=r"\(B, T, H, W, C\)"):
        video.openloop_grid(images[0], images[0])


def test_openloop_videos_picks_the_image_keys_of_a_report():
    image = torch.zeros((3, 4, 8, 8, 3), dtype=torch.uint8)
    report = {
        "openloop/image/truth": image, "openloop/image/pred": image, "openloop/image/mse": torch.tensor(0.0),
        "openloop/cam/left/truth": image[..., :1], "openloop/cam/left/pred": image[..., :1],
        "openloop/state/truth": torch.zeros(3, 4, 5), "openloop/state/pred": torch.zeros(3, 4, 5),
    }
    videos = video.openloop_videos(report)
    assert list(videos) == ["openloop/image", "openloop/cam/left"]
    assert videos["openloop/image"].shape == (4, 24, 32 + 24, 3)  # 32: the row-label strip
    assert videos["openloop/cam/left"].shape == (4, 24, 32 + 24, 1)


def label_text(strip) -> np.ndarray:
    """(H, L) bool: where a label strip has text."""
    return strip[..., 0] > 127


@pytest.mark.parametrize("channels", [3, 1, 4])
def test_grid_rows_are_labelled_truth_model_error(channels):
    # 64×64 images, 3 samples side by side, colour, grey and RGBA.
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 256, (3, 5, 64, 64, channels), dtype=np.uint8)
    pred = rng.integers(0, 256, (3, 5, 64, 64, channels), dtype=np.uint8)
    plain = video.openloop_grid(truth, pred, labels=False)
    grid = video.openloop_grid(truth, pred)
    L = video.label_width()
    assert L == 32 and grid.shape == (5, 3 * 64, L + 3 * 64, channels)  # same frame count
    assert np.array_equal(grid[:, :, L:], plain)  # the images are untouched, after the strip
    strip = grid[:, :, :L]
    assert not np.array_equal(strip, plain[:, :, :L])  # the label region is not the images
    assert all(np.array_equal(frame, strip[0]) for frame in strip)  # the same in every frame
    text = [label_text(strip[0, 64 * row:64 * (row + 1)]) for row in range(3)]
    for row in text:
        assert 40 < row.sum() < 64 * L // 2  # white text on black, in every row
        assert not row[:20].any() and not row[-20:].any()  # centred in its row
    assert not np.array_equal(text[0], text[1]) and not np.array_equal(text[1], text[2])
    if channels == 4:
        assert (strip[..., 3] == 255).all()


def test_labels_read_truth_model_error():
    # Each row's strip is exactly that word drawn with Pillow's default bitmap font.
    from PIL import Image, ImageDraw, ImageFont

    strip = video.label_rows(np.zeros((2, 48, 6, 3), np.uint8))[0, :, :-6]
    assert strip.shape == (48, 32, 3)
    font = getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)()
    for row, word in enumerate(["truth", "model", "error"]):
        image = Image.new("L", (64, 16))
        ImageDraw.Draw(image).text((0, 0), word, fill=255, font=font)
        expected = np.asarray(image) > 127
        expected = expected[:, expected.any(0)][expected.any(1)]  # cropped to the ink
        got = label_text(strip[16 * row:16 * (row + 1)])
        got = got[:, got.any(0)][got.any(1)]
        assert np.array_equal(got, expected), word


def test_labels_fit_tiny_rows_and_reject_uneven_ones():
    tiny = video.openloop_grid(np.zeros((2, 3, 4, 5, 1), np.uint8), np.zeros((2, 3, 4, 5, 1), np.uint8))
    assert tiny.shape == (3, 12, 32 + 10, 1)  # 4-pixel rows: each label clipped to its row
    with pytest.raises(ValueError, match="rows of equal height"):
        video.label_rows(np.zeros((1, 10, 4, 3), np.uint8))


# --------------------------------------------------------------------------------------------
# Encoders


def moving_square(T=5, H=9, W=7) -> np.ndarray:
    frames = np.zeros((T, H, W, 3), np.uint8)  # odd sizes on purpose: H.264 needs even ones
    for t in range(T):
        frames[t, t % H, t % W] = (250, 250, 250)
    return frames


def test_gif_and_mp4_read_back_with_frame_count_and_size(tmp_path):
    import imageio.v3 as iio

    frames = moving_square()
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        gif = writer.video(7, "openloop/image", frames, fps=10)
    assert gif == tmp_path / "videos" / "openloop_image_000000007.gif"
    decoded = gif_frames(gif)
    assert len(decoded) == 5 and decoded[0].shape == (10, 8, 3)  # padded to even sizes, as the MP4
    assert decoded[3][3, 3].tolist() == [250, 250, 250] and decoded[3][0, 0].tolist() == [0, 0, 0]
    mp4 = iio.imread(tmp_path / "videos" / "openloop_image_000000007.mp4", plugin="FFMPEG")
    assert mp4.shape == (5, 10, 8, 3)  # padded to even sizes, not rescaled
    assert mp4[3, 3, 3].mean() > 150 and mp4[3, 0, 0].mean() < 60  # lossy, but the square is there
    assert not list((tmp_path / "videos").glob("*partial*"))


def distinct_frames(T=12, H=9, W=7, C=3) -> np.ndarray:
    """T frames that all differ, odd sizes, few colours (so a GIF holds them exactly)."""
    frames = np.zeros((T, H, W, C), np.uint8)
    for t in range(T):
        frames[t] = 10 * t
        frames[t, t % H, t % W] = 250
    return frames


def gif_durations(path) -> list[int]:
    with Image.open(path) as gif:
        durations = []
        for index in range(gif.n_frames):
            gif.seek(index)
            durations.append(gif.info["duration"])
    return durations


def ffmpeg_timestamps(path) -> list[float]:
    """Presentation time (s) of every frame ffmpeg decodes from `path` (a GIF or an MP4)."""
    import re
    import subprocess

    import imageio_ffmpeg

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path), "-vf", "showinfo",
               "-f", "null", "-"]
    log = subprocess.run(command, capture_output=True, text=True, check=True).stderr
    return [float(t) for t in re.findall(r"pts_time:\s*([-\d.]+)", log)]


def test_video_fps_is_a_whole_number_of_centiseconds():
    assert video.video_fps(20) == 20 and video.video_fps(10) == 10 and video.video_fps(25) == 25
    assert video.video_fps(15) == pytest.approx(100 / 7) and video.video_fps(30) == pytest.approx(100 / 3)
    assert video.video_fps(24) == 25 and video.video_fps(60) == 50 and video.video_fps(1000) == 50
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="fps"):
            video.video_fps(bad)


@pytest.mark.parametrize("fps", [20, 15, 30])
def test_gif_and_mp4_hold_the_same_frames_at_the_same_rate_and_size(tmp_path, fps):
    import imageio.v3 as iio

    pytest.importorskip("imageio_ffmpeg")
    frames = distinct_frames()  # 12 distinct 9×7 frames
    gif = video.write_video(tmp_path, 1, "clip", frames, fps=fps)
    mp4 = gif.with_suffix(".mp4")
    movie = iio.imread(mp4, plugin="FFMPEG")
    mp4_fps = iio.immeta(mp4, plugin="FFMPEG")["fps"]
    durations = gif_durations(gif)
    decoded = np.stack(gif_frames(gif))
    # The same rate: each GIF frame lasts 1 / (the MP4's fps), the rate video_fps(fps) picks
    # (20, 100/7 ≈ 14.29, 100/3 ≈ 33.33), exact in centiseconds.
    rate = video.video_fps(fps)
    assert [1000 / d for d in durations] == [pytest.approx(mp4_fps, abs=0.01)] * len(durations)
    assert mp4_fps == pytest.approx(rate, abs=0.01) and durations[0] == round(1000 / rate)
    # The same frames and size: all 12, padded to 10×8 in both.
    assert len(decoded) == len(movie) == 12
    assert movie.shape == decoded.shape == (12, 10, 8, 3)
    assert np.array_equal(decoded, np.pad(frames, ((0, 0), (0, 1), (0, 1), (0, 0))))  # GIF: exact
    # Both, as ffmpeg plays them: frame i at i / rate.
    expected = [pytest.approx(i / rate, abs=1e-3) for i in range(12)]
    assert ffmpeg_timestamps(gif) == expected and ffmpeg_timestamps(mp4) == expected


def test_equal_consecutive_frames_stay_separate_gif_frames(tmp_path):
    import imageio.v3 as iio

    pytest.importorskip("imageio_ffmpeg")
    frames = distinct_frames(T=10, H=8, W=8)
    frames[3:7] = frames[3]  # a still stretch (Pillow's save_all merges it into one frame)
    grey = frames[..., :1].copy()
    for clip in (frames, grey, np.zeros((4, 6, 6, 3), np.uint8)):  # the last: all frames equal
        gif = video.write_video(tmp_path, 2, "still", clip, fps=15)
        decoded = np.stack(gif_frames(gif))
        assert np.array_equal(decoded, np.repeat(clip, 3, -1) if clip.shape[-1] == 1 else clip)
        assert gif_durations(gif) == [70] * len(clip)  # 100/7 fps
        assert len(iio.imread(gif.with_suffix(".mp4"), plugin="FFMPEG")) == len(clip)


def test_tensorboard_gif_is_the_padded_gif(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    with MetricsWriter(tmp_path) as writer:
        gif = writer.video(3, "clip", distinct_frames(T=4), fps=30)
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={IMAGES: 0})
    events.Reload()
    (image,) = events.Images("clip")
    assert (image.width, image.height) == (8, 10)  # 9×7 padded, like the GIF and MP4 files
    assert image.encoded_image_string == gif.read_bytes()


def test_scale_enlarges_by_nearest_neighbour_and_grey_becomes_rgb_in_mp4(tmp_path):
    import imageio.v3 as iio

    frames = np.stack([np.full((4, 6, 1), v, np.uint8) for v in (0, 200)])  # (2, 4, 6, 1)
    frames[1, 0, 0] = 50
    path = video.write_video(tmp_path, 3, "grey", frames, scale=3)
    decoded = gif_frames(path)
    assert decoded[1].shape == (12, 18, 3)
    assert decoded[1][:3, :3].tolist() == [[[50] * 3] * 3] * 3 and decoded[1][5, 5].tolist() == [200] * 3
    assert iio.imread(path.with_suffix(".mp4"), plugin="FFMPEG").shape == (2, 12, 18, 3)
    with pytest.raises(ValueError, match="scale"):
        video.write_video(tmp_path, 3, "grey", frames, scale=0)


def test_without_imageio_ffmpeg_only_the_gif_is_written_with_one_warning(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # makes the import fail
    monkeypatch.setattr(video.files, "_mp4_warned", False)
    with pytest.warns(ReverieWarning, match="GIF only.*imageio-ffmpeg"):
        first = video.write_video(tmp_path, 1, "a", moving_square())
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise
        video.write_video(tmp_path, 2, "a", moving_square())
    assert first.exists() and sorted(p.name for p in (tmp_path / "videos").iterdir()) == [
        "a_000000001.gif", "a_000000002.gif"]


def test_tensorboard_gets_an_animated_gif_image_summary(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    frames = moving_square(T=4, H=8, W=6)
    with MetricsWriter(tmp_path) as writer:
        writer.video(11, "openloop/image", frames)
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={IMAGES: 0})
    events.Reload()
    assert events.Tags()["images"] == ["openloop/image"]
    (image,) = events.Images("openloop/image")
    assert (image.step, image.width, image.height) == (11, 6, 8)
    assert image.encoded_image_string[:6] == b"GIF89a"
    assert len(gif_frames(_bytes_file(tmp_path / "tb.gif", image.encoded_image_string))) == 4


def _bytes_file(path, data):
    path.write_bytes(data)
    return path
