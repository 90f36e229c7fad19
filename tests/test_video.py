"""Tests for pickstyle.video.io: real files encoded with PyAV / Pillow, read back and identified."""

from __future__ import annotations

import os
import tracemalloc
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

import pickstyle.files
from pickstyle.errors import PickStyleError
from pickstyle.video import io as video
from pickstyle.video.frames import (
    auto_num_frames,
    fit_size,
    parse_size,
    restore_aspect,
    sample_frame_indices,
    to_video_tensor,
)
from pickstyle.video.io import read_video, write_video

# ------------------------------------------------------------------ synthetic, identifiable frames
# A frame is a 2 x 4 grid of black/white cells: cells 0-5 hold the bits of the frame index,
# cell 6 is always white and cell 7 always black (so a transposed or flipped frame is caught).


def code_frame(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    a = np.zeros((h, w, 3), np.uint8)
    for cell in range(8):
        white = cell == 6 or (cell < 6 and (i >> cell) & 1)
        if white:
            r, c = divmod(cell, 4)
            a[r * h // 2:(r + 1) * h // 2, c * w // 4:(c + 1) * w // 4] = 255
    return a


def frame_index(a: np.ndarray) -> int:
    h, w = a.shape[:2]
    bits = []
    for cell in range(8):
        r, c = divmod(cell, 4)
        y0, y1 = r * h // 2, (r + 1) * h // 2
        x0, x1 = c * w // 4, (c + 1) * w // 4
        dy, dx = max(1, (y1 - y0) // 3), max(1, (x1 - x0) // 3)
        bits.append(a[y0 + dy:y1 - dy, x0 + dx:x1 - dx].mean() > 127)
    assert bits[6] and not bits[7], "orientation markers lost"
    return sum(1 << k for k in range(6) if bits[k])


def indices_of(frames: np.ndarray) -> list[int]:
    return [frame_index(f) for f in frames]


def encode(path, frames, codec, *, fmt=None, rate=24, pix_fmt="yuv420p", pts=None, time_base=None,
           options=None):
    """Writes frames with PyAV directly (independent of write_video)."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if options:
            stream.options = options
        tb = time_base or Fraction(1, rate)
        stream.codec_context.time_base = tb
        for i, a in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(a, format="rgb24").reformat(format=pix_fmt)
            frame.pts = i if pts is None else pts[i]
            frame.time_base = tb
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


N = 20
FRAMES = [code_frame(i) for i in range(N)]


def make_source(kind: str, tmp_path):
    """(path, expected fps) of a 20-frame clip of FRAMES in the given container/codec."""
    if kind == "mp4":
        return encode(tmp_path / "a.mp4", FRAMES, "libx264"), 24
    if kind == "webm":
        return encode(tmp_path / "a.webm", FRAMES, "libvpx-vp9",
                      options={"deadline": "realtime", "cpu-used": "8"}), 24
    if kind == "mov":
        return encode(tmp_path / "a.mov", FRAMES, "mpeg4", options={"qscale": "2"}), 24
    if kind == "avi":
        return encode(tmp_path / "a.avi", FRAMES, "mjpeg", pix_fmt="yuvj420p"), 24
    if kind == "mkv":
        return encode(tmp_path / "a.mkv", FRAMES, "ffv1", pix_fmt="yuv444p"), 24
    if kind == "gif":
        return encode(tmp_path / "a.gif", FRAMES, "gif", pix_fmt="rgb8", rate=25), 25
    folder = tmp_path / "frames"
    folder.mkdir()
    ext = {"png_dir": "png", "jpg_dir": "jpg", "pattern": "png"}[kind]
    for i, a in enumerate(FRAMES):
        Image.fromarray(a).save(folder / f"{i:04d}.{ext}", quality=95)
    if kind == "pattern":
        return folder / "%04d.png", 16
    return folder, 16


SOURCES = ["mp4", "webm", "mov", "avi", "mkv", "gif", "png_dir", "jpg_dir", "pattern"]


@pytest.mark.parametrize("kind", SOURCES)
def test_read_every_format(kind, tmp_path):
    path, fps = make_source(kind, tmp_path)
    frames, got_fps = read_video(path)
    assert frames.dtype == np.uint8 and frames.shape == (N, 48, 64, 3)
    assert indices_of(frames) == list(range(N))
    assert got_fps == pytest.approx(fps, rel=1e-3)

    for count in (7, 1, 2, 30):  # 30 > 20: frames repeat
        chosen, _ = read_video(path, count)
        assert chosen.shape == (count, 48, 64, 3)
        assert indices_of(chosen) == sample_frame_indices(N, count)

    auto, _ = read_video(path, "auto")
    assert len(auto) == auto_num_frames(N) == 17
    assert indices_of(auto) == sample_frame_indices(N, 17)


def test_read_natural_order_and_image_fps(tmp_path):
    for i in (0, 2, 10, 11):  # plain string order would put 10 and 11 before 2
        Image.fromarray(code_frame(i)).save(tmp_path / f"f{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    frames, fps = read_video(tmp_path, image_fps=12.5)
    assert indices_of(frames) == [0, 2, 10, 11] and fps == 12.5


@pytest.mark.parametrize("h,w,codec,pix_fmt,name", [
    (80, 48, "libx264", "yuv420p", "portrait.mp4"),
    (31, 47, "ffv1", "yuv444p", "odd.mkv"),
    (47, 31, "mjpeg", "yuvj444p", "odd.avi"),
])
def test_read_portrait_and_odd_sizes(h, w, codec, pix_fmt, name, tmp_path):
    path = encode(tmp_path / name, [code_frame(i, h, w) for i in range(9)], codec, pix_fmt=pix_fmt)
    frames, fps = read_video(path)
    assert frames.shape == (9, h, w, 3) and fps == pytest.approx(24)
    assert indices_of(frames) == list(range(9))
    chosen, _ = read_video(path, 3)
    assert indices_of(chosen) == [0, 4, 8]


def vfr_clip(tmp_path):
    # frames 0-9 at 10 frames/s, then 10-39 at 30 frames/s (time base 1/300 s)
    pts = [30 * i for i in range(10)] + [300 + 10 * (i - 10) for i in range(10, 40)]
    path = encode(tmp_path / "vfr.mp4", [code_frame(i) for i in range(40)], "libx264",
                  rate=30, time_base=Fraction(1, 300), pts=pts)
    times = np.array(pts) / 300
    targets = np.linspace(times[0], times[-1], 9)
    expected = [int(np.argmin(np.abs(times - t))) for t in targets]
    assert expected == [0, 2, 5, 7, 10, 17, 24, 32, 39]  # not the index rule 0, 5, 10, 15, ...
    return path, expected


def test_read_variable_frame_rate_uniform_in_time(tmp_path):
    path, expected = vfr_clip(tmp_path)
    frames, fps = read_video(path, 9)
    assert indices_of(frames) == expected
    assert 18 < fps < 22  # 40 frames over ~2 s
    everything, _ = read_video(path)
    assert indices_of(everything) == list(range(40))


def test_read_falls_back_to_decoded_timestamps(tmp_path, monkeypatch):
    path, expected = vfr_clip(tmp_path)
    monkeypatch.setattr(video, "_packet_times", lambda p: (None, None))
    frames, _ = read_video(path, 9)
    assert indices_of(frames) == expected


def test_read_skips_corrupt_packets(tmp_path):
    # packet 5 of 20 is garbage: the decoder drops it, so packets and frames no longer match
    path = tmp_path / "corrupt5.avi"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        for i, a in enumerate(FRAMES):
            frame = av.VideoFrame.from_ndarray(a, format="rgb24").reformat(format="yuvj420p")
            frame.pts = i
            for packet in stream.encode(frame):
                if i == 5:
                    bad = av.Packet(b"\x00garbage" * 20)
                    bad.pts, bad.dts, bad.time_base, bad.stream = packet.pts, packet.dts, packet.time_base, stream
                    packet = bad
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    present = [i for i in range(N) if i != 5]
    frames, _ = read_video(path)
    assert indices_of(frames) == present
    times = np.array(present, dtype=float)
    for count in (9, "auto"):
        chosen, _ = read_video(path, count)
        wanted = 17 if count == "auto" else count  # auto_num_frames(19)
        targets = np.linspace(0, 19, wanted)
        assert indices_of(chosen) == [present[int(np.argmin(np.abs(times - t)))] for t in targets]


def test_read_keeps_only_chosen_frames(tmp_path):
    big = [np.repeat(np.repeat(code_frame(i), 4, 0), 4, 1) for i in range(40)]  # 192x256
    path = encode(tmp_path / "big.mp4", big, "libx264", options={"preset": "ultrafast"})
    one_frame = big[0].nbytes
    tracemalloc.start()
    try:
        frames, _ = read_video(path, 3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert indices_of(frames) == [0, 20, 39]
    assert peak < 12 * one_frame  # all 40 frames would be 40 x


# ------------------------------------------------------------------ read errors


def assert_error(match: str, fn, *args, **kwargs):
    with pytest.raises(PickStyleError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert match in message and "\n" not in message, message
    return message


def test_read_errors(tmp_path):
    assert_error("missing.mp4", read_video, tmp_path / "missing.mp4")
    (tmp_path / "empty").mkdir()
    assert_error("empty", read_video, tmp_path / "empty")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    assert_error(str(text), read_video, text)
    garbage = tmp_path / "garbage.mkv"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert_error(str(garbage), read_video, garbage)
    good = encode(tmp_path / "good.mp4", FRAMES, "libx264")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[:400])
    assert_error(str(truncated), read_video, truncated)
    assert_error(str(tmp_path / "none_%04d.png"), read_video, tmp_path / "none_%04d.png")


def test_read_video_without_decodable_frames(tmp_path):
    path = tmp_path / "corrupt.avi"
    with av.open(str(path), "w") as out:  # a valid container whose packets are all garbage
        stream = out.add_stream("mjpeg", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        out.start_encoding()
        for i in range(5):
            packet = av.Packet(b"\x00garbage" * 20)
            packet.pts = packet.dts = i
            packet.time_base, packet.stream = Fraction(1, 24), stream
            out.mux(packet)
    for num_frames in (None, 5, "auto"):
        message = assert_error("no frames", read_video, path, num_frames)
        assert message.startswith(str(path))


def test_read_bad_images(tmp_path):
    Image.fromarray(code_frame(0)).save(tmp_path / "0.png")
    Image.fromarray(code_frame(1, 40, 40)).save(tmp_path / "1.png")
    assert_error("1.png", read_video, tmp_path)
    (tmp_path / "1.png").write_bytes(b"not a png")
    assert_error("1.png", read_video, tmp_path)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "all", True])
def test_read_bad_num_frames(bad, tmp_path):
    path, _ = make_source("png_dir", tmp_path)
    assert_error(repr(bad), read_video, path, bad)


# ------------------------------------------------------------------ frame counts and sizes


def test_auto_num_frames():
    cases = {100: 81, 81: 81, 80: 77, 30: 29, 29: 29, 7: 5, 5: 5, 4: 1, 1: 1}
    assert {n: auto_num_frames(n) for n in cases} == cases
    assert auto_num_frames(100, max_frames=49) == 49
    assert auto_num_frames(20, temporal_stride=8) == 17
    assert all((auto_num_frames(n) - 1) % 4 == 0 for n in range(1, 200))
    assert_error("num_available=0", auto_num_frames, 0)


def test_sample_frame_indices():
    assert sample_frame_indices(10, 4) == [0, 3, 6, 9]
    assert sample_frame_indices(100, 5) == [0, 25, 50, 74, 99]
    assert sample_frame_indices(3, 5) == [0, 0, 1, 2, 2]
    assert sample_frame_indices(1, 3) == [0, 0, 0]
    assert sample_frame_indices(81, 81) == list(range(81))
    assert sample_frame_indices(50, 1) == [0]
    assert_error("num_frames=0", sample_frame_indices, 10, 0)


def test_fit_size():
    assert fit_size(1080, 1920) == (480, 848)
    assert fit_size(1920, 1080) == (848, 480)
    assert fit_size(480, 832) == (480, 832)
    assert fit_size(720, 1280, area=720 * 1280) == (720, 1280)
    assert fit_size(10, 10000)[0] == 16  # never below one multiple
    for h, w in [(31, 47), (47, 31), (1080, 1920), (2160, 3840), (480, 480), (1000, 1333), (360, 640)]:
        fh, fw = fit_size(h, w)
        assert fh % 16 == 0 and fw % 16 == 0 and fh >= 16 and fw >= 16
        assert abs(fh * fw / (480 * 832) - 1) < 0.05
        assert abs(fw / fh - w / h) / (w / h) < 0.05
        assert (fh > fw) == (h > w) or h == w


def test_parse_size():
    assert parse_size("480p") == 480 * 832
    assert parse_size("720P") == 720 * 1280
    assert parse_size("832x480") == (480, 832)
    assert parse_size(" 1280X720 ") == (720, 1280)
    assert parse_size("47x31") == (31, 47)
    for bad in ["foo", "1080p", "", "0x480", "832x0", "-832x480", "832x", "8.5x4"]:
        message = assert_error(repr(bad), parse_size, bad)
        assert "--size" in message


# ------------------------------------------------------------------ to_video_tensor


def test_to_video_tensor_exact_without_resize():
    frames = np.random.default_rng(0).integers(0, 256, (5, 32, 48, 3), dtype=np.uint8)
    x = to_video_tensor(frames, 32, 48)
    assert x.shape == (1, 3, 5, 32, 48) and x.dtype == torch.float32
    expected = (torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255.0 * 2.0 - 1.0)[None]
    assert torch.equal(x, expected)
    as_float = frames.astype(np.float32) / 255
    for other in (
        [Image.fromarray(f) for f in frames],
        as_float,
        torch.from_numpy(as_float),
        torch.from_numpy(as_float).permute(0, 3, 1, 2),
        frames.astype(np.float64) / 255,
    ):
        assert torch.allclose(to_video_tensor(other, 32, 48), expected, atol=1e-6)


def test_to_video_tensor_resize_range_and_chunks():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (19, 40, 60, 3), dtype=np.uint8)
    x = to_video_tensor(frames, 16, 32)
    assert x.shape == (1, 3, 19, 16, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    for t in (0, 8, 18):  # the chunked result equals frame-by-frame
        assert torch.equal(x[:, :, t:t + 1], to_video_tensor(frames[t:t + 1], 16, 32))
    up = to_video_tensor(frames[:2], 80, 120)  # upscaling works too
    assert up.shape == (1, 3, 2, 80, 120) and up.min() >= -1 and up.max() <= 1


def test_to_video_tensor_cover_and_centre_crop():
    wide = np.zeros((1, 40, 80, 3), np.uint8)
    wide[:, :, 40:] = 255  # left half black, right half white
    x = to_video_tensor(wide, 32, 32)[0, 0, 0]  # cover: 32x64, crop columns 16..48
    assert torch.all(x[:, :12] == -1) and torch.allclose(x[:, 20:], torch.tensor(1.0))
    assert x[:, 15].mean() < 0 < x[:, 16].mean()

    tall = np.zeros((1, 80, 40, 3), np.uint8)
    tall[:, 40:] = 255  # top black, bottom white
    y = to_video_tensor(tall, 32, 32)[0, 0, 0]
    assert torch.all(y[:12] == -1) and torch.allclose(y[20:], torch.tensor(1.0))
    assert y[15].mean() < 0 < y[16].mean()

    # a frame 3x wider than tall, cropped to a 2:1 target: cover by height, keep the centre
    stripes = np.zeros((1, 20, 60, 3), np.uint8)
    stripes[:, :, 20:40] = 255  # only the middle third is white
    z = to_video_tensor(stripes, 20, 40)[0, 0, 0]
    assert torch.all(z[:, :7] == -1) and torch.all(z[:, 33:] == -1)
    assert torch.allclose(z[:, 13:27], torch.tensor(1.0))


def test_to_video_tensor_errors():
    assert_error("empty", to_video_tensor, np.zeros((0, 8, 8, 3), np.uint8), 8, 8)
    assert_error("empty", to_video_tensor, [], 8, 8)
    assert_error("height=0", to_video_tensor, np.zeros((1, 8, 8, 3), np.uint8), 0, 8)
    assert_error("(2, 8, 8)", to_video_tensor, np.zeros((2, 8, 8), np.uint8), 8, 8)


# ------------------------------------------------------------------ restore_aspect


def test_restore_aspect():
    frames = np.random.default_rng(2).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    out = restore_aspect(frames, 1080, 1920)
    assert out.shape == (3, 32, 56, 3) and out.dtype == np.uint8  # 32 * 16 / 9 = 56.9 -> even 56
    assert restore_aspect(frames, 31, 47).shape == (3, 32, 48, 3)  # 48.5 -> 48
    assert restore_aspect(frames, 1920, 1080).shape == (3, 32, 18, 3)
    same = restore_aspect(frames, 500, 500)
    assert np.array_equal(same, frames)
    floats = restore_aspect(frames.astype(np.float32) / 255, 500, 500)
    assert floats.dtype == np.uint8 and np.array_equal(floats, frames)
    flat = np.full((2, 16, 16, 3), 77, np.uint8)
    assert np.all(restore_aspect(flat, 9, 16) == 77)
    assert_error("width=0", restore_aspect, frames, 10, 0)


# ------------------------------------------------------------------ write_video


@pytest.mark.parametrize("ext", [".mp4", ".mov", ".mkv", ".webm", ".gif"])
def test_write_round_trip(ext, tmp_path):
    frames = np.stack([code_frame(i) for i in range(12)])
    path = write_video(tmp_path / f"out{ext}", frames, fps=20)
    assert path == tmp_path / f"out{ext}" and path.exists()
    back, fps = read_video(path)
    assert back.shape == frames.shape
    assert indices_of(back) == list(range(12))
    assert fps == pytest.approx(20, rel=1e-3)
    assert os.listdir(tmp_path) == [f"out{ext}"]  # no temporary file left
    if ext != ".gif":
        assert np.abs(back.astype(int) - frames).mean() < 2  # good quality
    else:
        assert np.array_equal(back, frames)
        with Image.open(path) as im:
            assert im.info["loop"] == 0 and im.n_frames == 12 and im.info["duration"] == 50


def test_write_codecs(tmp_path):
    frames = np.stack([code_frame(i) for i in range(3)])
    expected = {".mp4": "h264", ".mov": "h264", ".mkv": "h264", ".webm": "vp9", ".gif": "gif"}
    for ext, codec in expected.items():
        path = write_video(tmp_path / f"c{ext}", frames)
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            assert stream.codec_context.name == codec
            if ext != ".gif":
                assert stream.codec_context.pix_fmt == "yuv420p"


@pytest.mark.parametrize("fps", [29.97, 30000 / 1001, 12.5, 24])
def test_write_fractional_fps(fps, tmp_path):
    frames = np.stack([code_frame(i) for i in range(6)])
    _, got = read_video(write_video(tmp_path / "f.mp4", frames, fps=fps))
    assert got == pytest.approx(fps, rel=1e-4)


def test_write_pads_odd_sizes(tmp_path):
    frames = np.full((4, 31, 47, 3), 128, np.uint8)
    frames[:, :, -4:] = (255, 0, 0)  # red last columns
    frames[:, -4:, :-4] = (0, 0, 255)  # blue last rows
    back, _ = read_video(write_video(tmp_path / "odd.mp4", frames))
    assert back.shape == (4, 32, 48, 3)
    tol = 24
    assert np.abs(back[:, :, 47].astype(int) - back[:, :, 46]).max() < tol  # repeated column
    assert np.abs(back[:, 31].astype(int) - back[:, 30]).max() < tol  # repeated row
    assert np.abs(back[:, 4:26, 47].astype(int) - (255, 0, 0)).max() < tol
    assert np.abs(back[:, 31, 4:40].astype(int) - (0, 0, 255)).max() < tol
    gif, _ = read_video(write_video(tmp_path / "odd.gif", frames))
    assert gif.shape == (4, 31, 47, 3)  # gif needs no padding


def test_write_input_types(tmp_path):
    frames = np.stack([code_frame(i) for i in range(5)])
    floats = frames.astype(np.float32) / 255  # like diffusers' result.frames[0]
    inputs = {
        "pil": [Image.fromarray(f) for f in frames],
        "float": floats,
        "batched": floats[None],
        "tensor": torch.from_numpy(floats),
        "tensor_tchw": torch.from_numpy(floats).permute(0, 3, 1, 2),
    }
    for name, value in inputs.items():
        back, _ = read_video(write_video(tmp_path / f"{name}.gif", value))
        assert np.array_equal(back, frames), name


def test_write_is_atomic(tmp_path):
    good = np.stack([code_frame(i) for i in range(4)])
    bad = [Image.fromarray(code_frame(0)), Image.fromarray(code_frame(1)), Image.fromarray(code_frame(2, 32, 32))]
    assert_error("frames[2]", write_video, tmp_path / "a.mp4", bad)
    assert os.listdir(tmp_path) == []
    path = write_video(tmp_path / "a.mp4", good)
    before = path.read_bytes()
    assert_error("frames[2]", write_video, path, bad)  # the old file stays untouched
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["a.mp4"]
    assert_error("frames", write_video, tmp_path / "b.webm", np.zeros((3, 8, 8, 4), np.uint8))
    assert os.listdir(tmp_path) == ["a.mp4"]


def test_write_errors(tmp_path):
    frames = np.stack([code_frame(i) for i in range(2)])
    message = assert_error("out.avi", write_video, tmp_path / "out.avi", frames)
    assert ".mp4" in message and ".gif" in message
    assert_error("empty", write_video, tmp_path / "e.mp4", np.zeros((0, 8, 8, 3), np.uint8))
    assert_error("empty", write_video, tmp_path / "e.mp4", [])
    for fps in (0, -5, float("nan"), "fast"):
        assert_error(f"fps={fps!r}", write_video, tmp_path / "e.mp4", frames, fps=fps)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_error(str(blocker), write_video, blocker / "sub" / "out.mp4", frames)
    assert sorted(os.listdir(tmp_path)) == ["file"]
    nested = write_video(tmp_path / "new" / "dir" / "out.gif", frames)
    assert nested.exists()


def test_write_unwritable_directory(tmp_path):
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert_error(str(locked), write_video, locked / "out.mp4", np.zeros((1, 8, 8, 3), np.uint8))
    finally:
        locked.chmod(0o700)


def test_write_unwritable_directory_any_user(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pickstyle.files.tempfile, "mkstemp", refuse)
    message = assert_error(str(tmp_path), write_video, tmp_path / "out.mp4", np.zeros((1, 8, 8, 3), np.uint8))
    assert "cannot write there" in message


def test_written_files_have_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        out = write_video(tmp_path / "out.mp4", np.zeros((2, 8, 8, 3), np.uint8))
    finally:
        os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o644


def test_write_temp_file_beside_output_is_removed_on_failure(tmp_path, monkeypatch):
    seen = []

    def crash(tmp, *args):
        seen.append(tmp)
        assert tmp.exists() and tmp.parent == tmp_path
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr(video, "_encode", crash)
    with pytest.raises(RuntimeError):
        write_video(tmp_path / "out.mp4", np.zeros((2, 8, 8, 3), np.uint8))
    assert seen[0].name.startswith(".out.mp4.tmp-") and seen[0].suffix == ".mp4"
    assert os.listdir(tmp_path) == []
