"""Video files in and out (PyAV): reading any container or a folder of images, picking frames by
time; writing mp4/mov/mkv (H.264), webm (VP9) and gif atomically. Frame rates are in frames per
second."""

from __future__ import annotations

import math
import os
import re
from fractions import Fraction
from pathlib import Path

import numpy as np

from pickstyle.errors import PickStyleError
from pickstyle.errors import one_line as _one_line
from pickstyle.files import IMAGE_EXTENSIONS, atomic_output, image_files
from pickstyle.video.frames import (
    _check_num_frames,
    _Frames,
    auto_num_frames,
    sample_frame_indices,
)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".gif")

# Output extension -> (container format, codec candidates in order of preference).
_WRITERS = {
    ".mp4": ("mp4", ("libx264", "libopenh264", "mpeg4")),
    ".mov": ("mov", ("libx264", "libopenh264", "mpeg4")),
    ".mkv": ("matroska", ("libx264", "libopenh264", "mpeg4")),
    ".webm": ("webm", ("libvpx-vp9", "libvpx")),
    ".gif": ("gif", ("gif",)),
}
_CODEC_OPTIONS = {
    "libx264": {"crf": "18", "preset": "medium"},
    "libvpx-vp9": {"crf": "24", "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"},
    "libvpx": {"crf": "10", "b": "2M", "deadline": "good", "cpu-used": "4"},
    "mpeg4": {"qscale": "2"},
}


def _ffmpeg_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.error.FFmpegError, OSError)


# ---------------------------------------------------------------- reading


def _pattern_files(pattern: str) -> list[Path] | None:
    """Files matching an image-sequence pattern like 'frames/%04d.png', ordered by number;
    None when `pattern` has no %d-style field."""
    head, name = os.path.split(pattern)
    fields = list(re.finditer(r"%(0?\d*)d", name))
    if len(fields) != 1:
        return None
    field = fields[0]
    digits = field.group(1)
    num = r"(\d{%d,})" % int(digits) if digits.startswith("0") and len(digits) > 1 else r"(\d+)"
    regex = re.compile(re.escape(name[: field.start()]) + num + re.escape(name[field.end():]) + r"\Z")
    folder = Path(head or ".")
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = regex.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def _read_images(files: list[Path], num_frames, label) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    n = len(files)
    if num_frames is None:
        indices = list(range(n))
    else:
        f = auto_num_frames(n) if num_frames == "auto" else int(num_frames)
        indices = sample_frame_indices(n, f)
    cache: dict[int, np.ndarray] = {}
    size = None
    for i in dict.fromkeys(indices):
        p = files[i]
        try:
            with Image.open(p) as im:
                im = ImageOps.exif_transpose(im)
                a = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise PickStyleError(f"{p}: not an image Pillow can read ({_one_line(err)})") from None
        if size is None:
            size = a.shape
        elif a.shape != size:
            raise PickStyleError(f"{p}: size {a.shape[1]}x{a.shape[0]} differs from the first image "
                                 f"in {label} ({size[1]}x{size[0]})")
        cache[i] = a
    out = np.empty((len(indices), *size), np.uint8)
    for j, i in enumerate(indices):
        out[j] = cache[i]
    return out


def _choose_by_time(times: np.ndarray, count: int, tick: float = 0.0) -> list[int]:
    """Indices into the sorted presentation `times` (seconds) of `count` frames uniform in time
    from the first to the last frame (nearest frame to each target time). Timestamps evenly
    spaced up to rounding (one `tick`, the time base in seconds, and under a quarter of a frame
    interval) give exactly the index rule."""
    n = len(times)
    if n == 1:
        return [0] * count
    diffs = np.diff(times)
    spread = diffs.max() - diffs.min()
    if spread <= tick + 1e-9 and spread <= 0.25 * diffs.min() + 1e-9:
        return sample_frame_indices(n, count)  # constant frame rate
    targets = np.linspace(times[0], times[-1], count)
    right = np.clip(np.searchsorted(times, targets), 1, n - 1)
    left = right - 1
    pick_right = (times[right] - targets) < (targets - times[left])
    return [int(i) for i in np.where(pick_right, right, left)]


def _average_fps(info: dict, times: np.ndarray | None, default: float) -> float:
    """Average frame rate: (N-1) / (t_last - t_first) from the timestamps, snapped to ffmpeg's
    average or guessed rate when one agrees within 1%; ffmpeg's rates alone without timestamps."""
    candidates = [r for r in (info["average_rate"], info["guessed_rate"]) if r is not None and float(r) > 0]
    if times is not None and len(times) >= 2 and times[-1] > times[0]:
        estimate = (len(times) - 1) / float(times[-1] - times[0])
        for r in candidates:
            if abs(float(r) - estimate) <= 0.01 * estimate:
                return float(r)
        return float(estimate)
    return float(candidates[0]) if candidates else float(default)


def _open_video(path: Path):
    import av

    try:
        container = av.open(str(path), "r")
    except _ffmpeg_errors() as err:
        raise PickStyleError(f"{path}: not a video file ffmpeg can decode ({_one_line(err)})") from None
    if not container.streams.video:
        container.close()
        raise PickStyleError(f"{path}: not a video file ffmpeg can decode (no video stream)")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    # Copied out now: a stream must not be touched once its container is closed.
    info = {"time_base": stream.time_base, "average_rate": stream.average_rate,
            "guessed_rate": stream.guessed_rate}
    return container, stream, info


def _packet_times(path: Path):
    """Presentation timestamps (stream ticks, sorted) of the video packets, found by demuxing
    only; None when some packet has no timestamp."""
    container, stream, info = _open_video(path)
    ticks = []
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            t = packet.pts if packet.pts is not None else packet.dts
            if t is None:
                return None, info
            ticks.append(int(t))
    except EOFError:
        pass
    except _ffmpeg_errors():
        return None, info
    finally:
        container.close()
    return sorted(ticks), info


def _frames(container, stream):
    """Decoded frames of `stream` in presentation order; packets the decoder rejects as invalid
    data are skipped (as the ffmpeg command line does)."""
    import av

    for packet in container.demux(stream):
        try:
            decoded = stream.decode(packet)
        except av.error.InvalidDataError:
            continue
        yield from decoded


def _decode(path: Path, keep):
    """Decodes every frame (in presentation order); `keep(k, frame)` says whether to convert
    frame k to RGB (True), skip it (False) or stop ("stop"). Returns (kept {k: array},
    frames decoded, their pts, stream info)."""
    container, stream, info = _open_video(path)
    kept: dict[int, np.ndarray] = {}
    pts: list = []
    try:
        for frame in _frames(container, stream):
            k = len(pts)
            verdict = keep(k, frame)
            if verdict == "stop":
                break
            pts.append(frame.pts)
            if verdict:
                kept[k] = frame.to_ndarray(format="rgb24")
    except EOFError:  # av.error.EOFError: a stream that ends early ends the frames
        pass
    except _ffmpeg_errors() as err:
        raise PickStyleError(f"{path}: decoding failed after {len(pts)} frames ({_one_line(err)})") from None
    finally:
        container.close()
    return kept, len(pts), pts, info


def _times_from_pts(pts: list, time_base) -> np.ndarray | None:
    """Sorted presentation times (s) of decoded frames; None when some frame has no pts."""
    if pts and all(p is not None for p in pts) and time_base is not None:
        return np.array(sorted(pts), dtype=np.float64) * float(time_base)
    return None


def _stack(kept: dict[int, np.ndarray], indices: list[int]) -> np.ndarray:
    first = kept[indices[0]]
    out = np.empty((len(indices), *first.shape), np.uint8)
    for j, i in enumerate(indices):
        out[j] = kept[i]
    return out


def _read_container(path: Path, num_frames, image_fps: float) -> tuple[np.ndarray, float]:
    if num_frames is None:
        kept, count, pts, info = _decode(path, lambda k, f: True)
        if count == 0:
            raise PickStyleError(f"{path}: the video has no frames")
        times = _times_from_pts(pts, info["time_base"])
        return _stack(kept, list(range(count))), _average_fps(info, times, image_fps)

    # Pass 1: timestamps by demuxing only; pass 2: decode, keeping the chosen frames only.
    ticks, info = _packet_times(path)
    if ticks:
        times = np.array(ticks, dtype=np.float64) * float(info["time_base"])
        count = auto_num_frames(len(ticks)) if num_frames == "auto" else int(num_frames)
        indices = _choose_by_time(times, count, float(info["time_base"]))
        wanted, last = set(indices), max(indices)
        mismatch = []

        def keep(k, frame):
            if k > last:
                return "stop"
            if k >= len(ticks) or (frame.pts is not None and frame.pts != ticks[k]):
                mismatch.append(k)
                return "stop"
            return k in wanted

        kept, _, _, info = _decode(path, keep)
        if not mismatch and wanted.issubset(kept):
            return _stack(kept, indices), _average_fps(info, times, image_fps)

    # Fallback (packets without timestamps, or packets that are not one frame each):
    # decode once for the timestamps without keeping images, then decode again to keep.
    _, total, pts, info = _decode(path, lambda k, f: False)
    if total == 0:
        raise PickStyleError(f"{path}: the video has no frames")
    times = _times_from_pts(pts, info["time_base"])
    count = auto_num_frames(total) if num_frames == "auto" else int(num_frames)
    if times is None:  # no timestamps: the index rule
        indices = sample_frame_indices(total, count)
    else:  # sorted position -> decode position (the same unless the decoder reorders)
        order = np.argsort(np.array(pts, dtype=np.int64), kind="stable")
        indices = [int(order[i]) for i in _choose_by_time(times, count, float(info["time_base"]))]
    wanted = set(indices)
    kept, _, _, _ = _decode(path, lambda k, f: k in wanted)
    if not wanted.issubset(kept):
        raise PickStyleError(f"{path}: decoding gave fewer frames the second time")
    return _stack(kept, indices), _average_fps(info, times, image_fps)


def read_video(path, num_frames=None, *, image_fps: float = 16.0) -> tuple[np.ndarray, float]:
    """Reads RGB frames uint8 [T, H, W, 3] and the average frame rate (frames/s).

    `path`: a video file any ffmpeg demuxer/decoder reads, a folder of png/jpg/jpeg/webp images
    (natural sort by file name, `image_fps` frames/s) or a pattern like 'frames/%04d.png'.
    `num_frames`: None = every frame; an int F = F frames uniform in presentation time from the
    first to the last frame (nearest frame to each target time; repeats when the clip is shorter);
    'auto' = auto_num_frames(N) of the N frames. Only the chosen frames are kept in memory.
    """
    _check_num_frames(num_frames)
    if isinstance(image_fps, bool) or not isinstance(image_fps, (int, float)) or not image_fps > 0:
        raise PickStyleError(f"image_fps={image_fps!r}: expected a positive number")
    if not isinstance(path, (str, os.PathLike)):
        raise PickStyleError(f"{path!r}: expected a file or folder path")
    p = Path(path)
    if p.is_dir():
        files = image_files(p)
        if not files:
            raise PickStyleError(f"{p}: the folder has no {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} images")
        return _read_images(files, num_frames, p), float(image_fps)
    if not p.exists():
        files = _pattern_files(str(path)) if "%" in str(path) else None
        if files is None:
            raise PickStyleError(f"{p}: no such file")
        if not files:
            raise PickStyleError(f"{p}: no files match the image-sequence pattern")
        return _read_images(files, num_frames, p), float(image_fps)
    if not p.is_file():
        raise PickStyleError(f"{p}: not a regular file")
    return _read_container(p, num_frames, float(image_fps))


# ---------------------------------------------------------------- writing


def _rate(fps) -> Fraction:
    try:
        value = float(fps)
    except (TypeError, ValueError):
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise PickStyleError(f"fps={fps!r}: expected a positive number of frames per second")
    rate = Fraction(value).limit_denominator(1001)
    if rate <= 0:
        raise PickStyleError(f"fps={fps!r}: too small")
    return rate


def _pad_even(a: np.ndarray) -> np.ndarray:
    ph, pw = a.shape[0] % 2, a.shape[1] % 2
    if ph or pw:
        a = np.pad(a, ((0, ph), (0, pw), (0, 0)), mode="edge")
    return a


def _gif_frame(a: np.ndarray):
    """An RGB uint8 frame as a pal8 PyAV frame with its own 256-colour palette (Pillow)."""
    import av
    from PIL import Image

    q = Image.fromarray(a).quantize(256)
    palette = np.zeros((256, 3), np.uint8)
    raw = np.frombuffer(bytes(q.getpalette() or []), np.uint8)[: 256 * 3]
    palette.reshape(-1)[: raw.size] = raw
    argb = np.concatenate([np.full((256, 1), 255, np.uint8), palette], axis=1)
    return av.VideoFrame.from_ndarray((np.ascontiguousarray(np.asarray(q)), argb), format="pal8")


def _encode(tmp: Path, fmt: str, codec: str, src: _Frames, rate: Fraction) -> None:
    import av

    gif = codec == "gif"
    h, w = (src.height, src.width) if gif else (src.height + src.height % 2, src.width + src.width % 2)
    options = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {"loop": "0"} if gif else {}
    with av.open(str(tmp), "w", format=fmt, options=options) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = w, h
        stream.pix_fmt = "pal8" if gif else "yuv420p"
        stream.options = dict(_CODEC_OPTIONS.get(codec, {}))
        stream.thread_type = "AUTO"
        time_base = Fraction(rate.denominator, rate.numerator)
        for i in range(src.n):
            a = src.uint8(i)
            if gif:
                frame = _gif_frame(a)
            else:
                frame = av.VideoFrame.from_ndarray(_pad_even(a), format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def write_video(path, frames, fps: float = 16.0) -> Path:
    """Writes frames (list of PIL images, uint8 [T, H, W, 3], or float array/tensor [T, H, W, 3]
    in [0, 1]) at `fps` frames/s; the extension picks the format: .mp4/.mov/.mkv (H.264 yuv420p,
    crf 18, odd sizes padded to even by repeating the last row/column), .webm (VP9 yuv420p, same
    padding), .gif (per-frame 256-colour palette, loops forever, delays in 1/100 s).
    Atomic: encodes to a temporary file beside `path`, then renames. Returns `path`."""
    import av

    if not isinstance(path, (str, os.PathLike)):
        raise PickStyleError(f"{path!r}: expected an output file path")
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in _WRITERS:
        raise PickStyleError(f"{path}: unsupported output extension {ext or '(none)'!r} "
                             f"(supported: {', '.join(VIDEO_EXTENSIONS)})")
    fmt, candidates = _WRITERS[ext]
    codec = next((c for c in candidates if c in av.codecs_available), None)
    if codec is None:
        raise PickStyleError(f"{path}: this ffmpeg build has no encoder for {ext} ({', '.join(candidates)})")
    rate = _rate(fps)
    src = _Frames(frames)
    if path.is_dir():
        raise PickStyleError(f"{path}: is a directory")
    try:
        with atomic_output(path) as tmp:
            _encode(tmp, fmt, codec, src, rate)
    except _ffmpeg_errors() as err:
        raise PickStyleError(f"{path}: encoding failed ({_one_line(err)})") from None
    return path
