"""Frames as uint8 arrays, and a stylised video aligned to its source (the same frame count at the
same relative times, the same size): what the metrics and the deflicker compare."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pickstyle.errors import PickStyleError
from pickstyle.errors import one_line as _one_line
from pickstyle.video.frames import to_uint8


def as_frames(frames, what: str = "frames") -> np.ndarray:
    """A uint8 array [T, H, W, 3] (floats are taken to lie in [0, 1]; one [H, W, 3] frame -> T=1)."""
    if hasattr(frames, "detach"):  # torch tensor
        frames = frames.detach().cpu().numpy()
    try:
        a = np.asarray(frames)
    except (TypeError, ValueError) as err:
        raise PickStyleError(f"{what}: not an array of frames ({_one_line(err)})") from None
    if a.ndim == 3 and a.shape[-1] == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3 or 0 in a.shape:
        raise PickStyleError(f"{what}: shape {tuple(a.shape)} is not [T, H, W, 3]")
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
        return to_uint8(a)
    raise PickStyleError(f"{what}: unsupported dtype {a.dtype}")


def pair_frames(stylised, source, min_frames: int = 1) -> tuple[np.ndarray, np.ndarray]:
    sty, src = as_frames(stylised, "stylised"), as_frames(source, "source")
    if sty.shape != src.shape:
        raise PickStyleError(f"stylised {_shape_text(sty)} and source {_shape_text(src)} differ: "
                             "call align_videos first")
    if len(src) < min_frames:
        raise PickStyleError(f"source: {len(src)} frame(s); this metric needs at least {min_frames}")
    return sty, src


def _shape_text(a: np.ndarray) -> str:
    return f"{a.shape[0]} frames of {a.shape[2]}x{a.shape[1]}"


def gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def luma(frames: np.ndarray) -> np.ndarray:
    """Rec. 601 luma (0..255), float32 [T, H, W]."""
    f = frames.astype(np.float32)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


# ---------------------------------------------------------------- alignment


def _resize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    if frames.shape[1:3] == (height, width):
        return frames
    out = np.empty((len(frames), height, width, 3), np.uint8)
    for i, f in enumerate(frames):
        out[i] = np.asarray(Image.fromarray(f).resize((width, height), Image.BICUBIC))
    return out


def _uniform_indices(n: int, count: int) -> np.ndarray:
    return np.round(np.linspace(0, n - 1, count)).astype(int)


def align_videos(stylised, source, size: tuple[int, int] | None = None):
    """Both videos with the same frame count and size: `(stylised, source, notes)`.

    Frames: the shorter length L; the longer video is sampled at indices round(linspace(0, N-1, L)),
    i.e. at the same relative times. Size `(height, width)`: the given one, else the smaller of the
    two frame sizes (by area), rounded down to even; frames are resized with Pillow bicubic (an
    aspect change stretches, and is noted). `notes` says what was done, in words.
    """
    sty, src = as_frames(stylised, "stylised"), as_frames(source, "source")
    notes: list[str] = []
    ns, nr = len(sty), len(src)
    if ns != nr:
        n = min(ns, nr)
        if ns > n:
            sty = sty[_uniform_indices(ns, n)]
        else:
            src = src[_uniform_indices(nr, n)]
        notes.append(f"stylised has {ns} frames, source {nr}: compared {n} frames at the same relative times")
    (hs, ws), (hr, wr) = sty.shape[1:3], src.shape[1:3]
    if size is None:
        h, w = (hs, ws) if hs * ws < hr * wr else (hr, wr)
        h, w = max(2, h - h % 2), max(2, w - w % 2)
    else:
        try:
            h, w = (int(v) for v in size)
        except (TypeError, ValueError):
            raise PickStyleError(f"size={size!r}: expected (height, width)") from None
        if h < 1 or w < 1:
            raise PickStyleError(f"size={size!r}: height and width must be positive")
    if abs(hs / ws - hr / wr) > 0.01 * (hr / wr):
        notes.append(f"aspect ratios differ (stylised {ws}x{hs}, source {wr}x{hr}): frames stretched to {w}x{h}")
    for name, (fh, fw) in (("stylised", (hs, ws)), ("source", (hr, wr))):
        if (fh, fw) != (h, w):
            notes.append(f"resized {name} {fw}x{fh} -> {w}x{h}")
    return _resize(sty, h, w), _resize(src, h, w), notes


def _count_frames(path) -> int | None:
    """Frames in a video file by demuxing only (no decoding); None when that is not possible."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        import av

        with av.open(str(p), "r") as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.size > 0) or None
    except Exception:  # noqa: BLE001 - any demuxer failure: read_video reports it properly
        return None


def load_pair(source_path, stylised_path, size: tuple[int, int] | None = None):
    """Reads and aligns a source and a stylised video: `(source, stylised, notes)`.

    Both are read with read_video(num_frames=L), L the shorter frame count, so the frames of both
    are uniform in presentation time over each clip; then `align_videos` gives them one size.
    """
    from pickstyle.video.io import read_video

    counts, fps = {}, {}
    for name, path in (("source", source_path), ("stylised", stylised_path)):
        n = _count_frames(path)
        if n is None:  # image folders, patterns, odd containers: read everything once
            frames, fps[name] = read_video(path)
            n = len(frames)
        counts[name] = n
    n = min(counts.values())
    src, fps["source"] = read_video(source_path, num_frames=n)
    sty, fps["stylised"] = read_video(stylised_path, num_frames=n)
    notes = []
    if counts["source"] != counts["stylised"]:
        notes.append(f"stylised has {counts['stylised']} frames, source {counts['source']}: "
                     f"compared {n} frames at the same relative times")
    if abs(fps["source"] - fps["stylised"]) > 0.01 * max(fps["source"], 1e-6):
        notes.append(f"frame rates differ (stylised {fps['stylised']:g} fps, source {fps['source']:g} fps): "
                     "frames matched by relative time")
    sty, src, more = align_videos(sty, src, size)
    return src, sty, notes + more
