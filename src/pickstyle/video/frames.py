"""Frames in memory, and the geometry PickStyle prescribes: how many frames and which, the
generation size, the model input tensor and back.

Frames travel as RGB uint8 arrays [T, H, W, 3]; the model input is a float32 tensor
[1, 3, T, H, W] in [-1, 1].
"""

from __future__ import annotations

import math
import re

import numpy as np

from pickstyle.errors import PickStyleError

SIZE_PRESETS = {"480p": 480 * 832, "720p": 720 * 1280}
_CHUNK = 8  # frames resized at once by to_video_tensor


# ---------------------------------------------------------------- frame counts and sizes


def auto_num_frames(num_available: int, max_frames: int = 81, temporal_stride: int = 4) -> int:
    """The method's frame count for a clip of `num_available` frames: the largest 4k+1 (for
    stride 4) that is <= both the clip length and `max_frames`. E.g. 100 -> 81, 30 -> 29, 7 -> 5."""
    for name, value in (("num_available", num_available), ("max_frames", max_frames),
                        ("temporal_stride", temporal_stride)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise PickStyleError(f"{name}={value!r}: expected a positive integer")
    n = min((num_available - 1) // temporal_stride + 1, (max_frames - 1) // temporal_stride + 1)
    return int(temporal_stride * (n - 1) + 1)


def sample_frame_indices(num_available: int, num_frames: int) -> list[int]:
    """Indices round(linspace(0, N-1, F)) of F frames spread over N (first and last included;
    indices repeat when F > N)."""
    if isinstance(num_available, bool) or not isinstance(num_available, (int, np.integer)) or num_available < 1:
        raise PickStyleError(f"num_available={num_available!r}: expected a positive integer")
    _check_num_frames(num_frames, allow_auto=False)
    return [int(i) for i in np.round(np.linspace(0, num_available - 1, num_frames))]


def lead_in_indices(lead_in: int) -> list[int]:
    """The source frames a lead-in of `lead_in` frames plays before frame 0: L, L-1, ..., 1 (the
    clip's start mirrored, so that motion runs smoothly into frame 0)."""
    return list(range(lead_in, 0, -1))


def fit_size(height: int, width: int, area: int = 480 * 832, multiple: int = 16) -> tuple[int, int]:
    """Aspect-preserving (h, w) in pixels of about `area` pixels, each a multiple of `multiple`
    (at least `multiple`). E.g. (1080, 1920) -> (480, 848)."""
    for name, value in (("height", height), ("width", width), ("area", area), ("multiple", multiple)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value > 0:
            raise PickStyleError(f"{name}={value!r}: expected a positive number")
    s = math.sqrt(area / (height * width))
    h = max(multiple, round(height * s / multiple) * multiple)
    w = max(multiple, round(width * s / multiple) * multiple)
    return int(h), int(w)


def parse_size(text: str) -> int | tuple[int, int]:
    """'480p' / '720p' -> a pixel area (480*832, 720*1280); 'WxH' (e.g. '832x480') -> the exact
    (height, width) in pixels."""
    value = str(text).strip().lower()
    if value in SIZE_PRESETS:
        return SIZE_PRESETS[value]
    m = re.fullmatch(r"\s*(\d+)\s*[x×]\s*(\d+)\s*", value)
    if m:
        w, h = int(m.group(1)), int(m.group(2))
        if w > 0 and h > 0:
            return h, w
        raise PickStyleError(f"--size {text!r}: width and height must be positive")
    raise PickStyleError(f"--size {text!r}: expected 480p, 720p or WxH (e.g. 832x480)")


def _check_num_frames(num_frames, allow_auto: bool = True) -> None:
    if num_frames is None or (allow_auto and num_frames == "auto"):
        return
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        extra = ", None or 'auto'" if allow_auto else ""
        raise PickStyleError(f"num_frames={num_frames!r}: expected a positive integer{extra}")


# ---------------------------------------------------------------- frame containers


def _layout(arr_shape: tuple[int, ...], what: str) -> str:
    """'thwc' or 'tchw' for a 4-D frame stack; raises PickStyleError otherwise."""
    if len(arr_shape) == 4 and arr_shape[-1] == 3:
        return "thwc"
    if len(arr_shape) == 4 and arr_shape[1] == 3:
        return "tchw"
    raise PickStyleError(f"{what}: shape {tuple(arr_shape)} is not [T, H, W, 3] (or [T, 3, H, W])")


class _Frames:
    """Uniform read access to a frame stack: list of PIL images / HxWx3 arrays, numpy array or
    torch tensor (uint8, or float in [0, 1]); frames come out one at a time or in chunks."""

    def __init__(self, frames, what: str = "frames"):
        self.what = what
        self.kind = None
        if frames is None:
            raise PickStyleError(f"{what}: no frames (got None)")
        try:
            import torch
        except ImportError:  # pragma: no cover - torch is a dependency
            torch = None
        if torch is not None and isinstance(frames, torch.Tensor):
            t = frames.detach()
            if t.ndim == 5 and t.shape[0] == 1:
                t = t[0]
            self.layout = _layout(tuple(t.shape), what) if t.numel() else "thwc"
            self.kind, self.data = "tensor", t
        elif isinstance(frames, np.ndarray):
            a = frames
            if a.ndim == 5 and a.shape[0] == 1:
                a = a[0]
            self.layout = _layout(a.shape, what) if a.size else "thwc"
            self.kind, self.data = "array", a
        elif isinstance(frames, (list, tuple)):
            self.kind, self.data, self.layout = "list", list(frames), "thwc"
        else:
            raise PickStyleError(f"{what}: unsupported type {type(frames).__name__} "
                                 "(expected a list of PIL images, a numpy array or a torch tensor)")
        self.n = len(self.data)
        if self.n == 0:
            raise PickStyleError(f"{what}: no frames (empty input)")
        if self.kind == "list":
            first = self._list_item(0)
            self.height, self.width = first.shape[:2]
        elif self.layout == "thwc":
            self.height, self.width = int(self.data.shape[1]), int(self.data.shape[2])
        else:
            self.height, self.width = int(self.data.shape[2]), int(self.data.shape[3])
        if self.height < 1 or self.width < 1:
            raise PickStyleError(f"{what}: empty frame size {self.width}x{self.height}")

    def _list_item(self, i: int) -> np.ndarray:
        from PIL import Image

        item = self.data[i]
        if isinstance(item, Image.Image):
            return np.asarray(item.convert("RGB"))
        if hasattr(item, "detach"):  # torch tensor
            item = item.detach().cpu()
            item = item.float().numpy() if item.is_floating_point() else item.numpy()
        a = np.asarray(item)
        if a.ndim == 3 and a.shape[-1] != 3 and a.shape[0] == 3:
            a = a.transpose(1, 2, 0)
        if a.ndim != 3 or a.shape[-1] != 3:
            raise PickStyleError(f"{self.what}[{i}]: shape {a.shape} is not [H, W, 3]")
        return a

    def _check_size(self, i: int, h: int, w: int) -> None:
        if (h, w) != (self.height, self.width):
            raise PickStyleError(f"{self.what}[{i}]: size {w}x{h} differs from frame 0 "
                                 f"({self.width}x{self.height})")

    def uint8(self, i: int) -> np.ndarray:
        """Frame i as a uint8 array [H, W, 3]."""
        import torch

        if self.kind == "list":
            a = self._list_item(i)
            self._check_size(i, *a.shape[:2])
        elif self.kind == "tensor":
            t = self.data[i]
            if self.layout == "tchw":
                t = t.permute(1, 2, 0)
            t = t.cpu()
            a = t.float().numpy() if t.is_floating_point() else t.clamp(0, 255).to(torch.uint8).numpy()
        else:
            a = self.data[i]
            if self.layout == "tchw":
                a = a.transpose(1, 2, 0)
        return to_uint8(a)

    def float_chunk(self, start: int, stop: int):
        """Frames [start, stop) as a float32 tensor [t, 3, H, W] in [0, 1]; uint8 values give
        exactly x / 255."""
        import torch

        if self.kind == "tensor":
            t = self.data[start:stop].cpu()
            if self.layout == "thwc":
                t = t.permute(0, 3, 1, 2)
            if not t.is_floating_point() and t.dtype != torch.uint8:
                t = t.clamp(0, 255).to(torch.uint8)
            uint8 = t.dtype == torch.uint8
        else:
            if self.kind == "list":
                items = []
                for i in range(start, stop):
                    a = self._list_item(i)
                    self._check_size(i, *a.shape[:2])
                    items.append(a)
                a = np.stack(items)
            else:
                a = self.data[start:stop]
                if self.layout == "tchw":
                    a = a.transpose(0, 2, 3, 1)
            uint8 = a.dtype == np.uint8
            if not uint8 and not np.issubdtype(a.dtype, np.floating):
                a = to_uint8(a)
                uint8 = True
            t = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)
        if uint8:
            return t.to(torch.float32) / 255.0
        t = torch.nan_to_num(t.to(torch.float32), nan=0.0)
        return t.clamp(0.0, 1.0)


def to_uint8(a: np.ndarray, peak: float = 1.0) -> np.ndarray:
    """An array of frames as uint8: floats are taken to lie in [0, peak] (NaN as 0), rounded to
    the nearest level and clipped; integers are clipped to [0, 255]."""
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a, nan=0.0)
        return np.clip(np.rint(a * (255.0 / peak)), 0, 255).astype(np.uint8)
    return np.clip(a, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- resizing


def check_size(height, width) -> None:
    """Raise PickStyleError unless height and width are positive integers."""
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise PickStyleError(f"{name}={value!r}: expected a positive integer")


def frame_size(frames) -> tuple[int, int]:
    """(height, width) in pixels of the frames `to_video_tensor` accepts."""
    src = _Frames(frames)
    return src.height, src.width


def cover_and_crop(x, height: int, width: int):
    """Images x, float tensor [N, 3, h, w] in [0, 1], resized to cover (height, width) (bicubic,
    antialiased, clamped to [0, 1]) and centre-cropped: [N, 3, height, width]. Images of that size
    are returned as they are; a side already covering is cropped without resampling."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    if (h, w) == (height, width):
        return x
    scale = max(height / h, width / w)
    rh, rw = max(height, round(h * scale)), max(width, round(w * scale))
    if (rh, rw) != (h, w):
        x = F.interpolate(x, size=(rh, rw), mode="bicubic", align_corners=False, antialias=True).clamp_(0.0, 1.0)
    top, left = (rh - height) // 2, (rw - width) // 2
    return x[:, :, top : top + height, left : left + width]


def to_video_tensor(frames, height: int, width: int):
    """The model input: float32 tensor [1, 3, T, height, width] in [-1, 1].

    `frames`: list of PIL images, uint8 array [T, H, W, 3], float array/tensor [T, H, W, 3] in
    [0, 1] or float tensor [T, 3, H, W] in [0, 1]. Frames are resized to cover (height, width)
    (bicubic, antialiased, clamped to [0, 1]) and centre-cropped; frames already of that size are
    not resampled (uint8 x -> x / 255 * 2 - 1 exactly). Works in chunks of frames.
    """
    import torch

    check_size(height, width)
    src = _Frames(frames)
    out = torch.empty((1, 3, src.n, height, width), dtype=torch.float32)
    for start in range(0, src.n, _CHUNK):
        stop = min(src.n, start + _CHUNK)
        x = cover_and_crop(src.float_chunk(start, stop), height, width)
        out[0, :, start:stop] = (x * 2.0 - 1.0).permute(1, 0, 2, 3)
    return out


def restore_aspect(frames, height: int, width: int) -> np.ndarray:
    """Resizes generated frames [T, h, w, 3] (uint8, or float in [0, 1]) to the aspect ratio
    height:width of the original input, keeping the frame height: uint8 [T, h', w', 3] with
    h' = h and w' = round(h * width / height), both rounded to even numbers (Pillow bicubic)."""
    from PIL import Image

    check_size(height, width)
    src = _Frames(frames)
    h = src.height
    out_h = max(2, int(h / 2 + 0.5) * 2)
    out_w = max(2, int(h * width / height / 2 + 0.5) * 2)
    out = np.empty((src.n, out_h, out_w, 3), np.uint8)
    same = (out_h, out_w) == (src.height, src.width)
    for i in range(src.n):
        a = src.uint8(i)
        if same:
            out[i] = a
        else:
            out[i] = np.asarray(Image.fromarray(a).resize((out_w, out_h), Image.Resampling.BICUBIC))
    return out


