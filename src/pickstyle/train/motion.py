"""Synthetic camera motion: turn a still image into a short clip.

PickStyle trains on paired stills (a source image and its stylised partner); to teach the model
video, each pair is animated with one randomly sampled camera motion applied identically to both
images (`motion_pair`). Everything here is pure tensor code: it runs on the device of its input,
works on batches and, for sampling, draws only from the `torch.Generator` it is given.

Shapes: images are [B, C, H, W] floats (any range, e.g. [-1, 1]); clips are [B, C, T, H, W] in the
same dtype and on the same device. Frame t of T has progress u = t / (T - 1) (u = 0 when T = 1).
Every frame is a crop (top, left, h, w) of the image (of the rotated image for "rotate"), resized
back to H x W with bilinear interpolation (align_corners=False, no antialiasing); a crop equal to
the whole image is returned as is, so it is exact.

Kind names follow the crop window (the camera): "slide_right" moves the window right, so the
content drifts left across the frame. Slides use a quadratic ease-in, shift_t = int(m * u**2).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from pickstyle.errors import PickStyleError
from pickstyle.video.frames import check_size

MOTIONS = ("zoom_in", "zoom_out", "slide_left", "slide_right", "slide_up", "slide_down", "rotate", "static")

# Kinds picked uniformly when the clip moves (probability MOVING_PROB); "rotate" is listed twice.
MOVING_CHOICES = (*MOTIONS[:-1], "rotate")
MOVING_PROB = 0.8
ZOOM_RANGE = (1.2, 2.0)  # zoom factor z ~ U(1.2, 2.0)
SHIFT_RANGE = (100, 200)  # max slide m ~ randint[100, 200] pixels (inclusive) at REFERENCE_SIZE
ANGLE_RANGE = (-20.0, 20.0)  # rotation a ~ U(-20, 20) degrees
REFERENCE_SIZE = (480, 832)  # (height, width) the shift range is given at
ROTATE_ZOOM = 1.5  # fixed centre-crop zoom after a rotation, hiding most of the zero fill


@dataclass(frozen=True)
class Motion:
    """One sampled camera motion.

    kind: one of MOTIONS; zoom: zoom factor z >= 1 (zooms and slides); shift: maximum slide in
    pixels of the working resolution (already scaled); angle: final rotation in degrees,
    positive = counter-clockwise as seen in the image.
    """

    kind: str
    zoom: float
    shift: int
    angle: float

    def __post_init__(self):
        _check_kind(self.kind)

    def as_kwargs(self) -> dict:
        """The parameters as keywords of `apply_motion`: dict(zoom=, shift=, angle=)."""
        return {"zoom": self.zoom, "shift": self.shift, "angle": self.angle}


def scale_shift(shift: int | float, height: int, width: int) -> int:
    """A shift in pixels at 480x832 scaled to height x width by the side-length ratio.

    Rule: round(shift * sqrt(height * width / (480 * 832))) (Python round), so the shift keeps
    the same fraction of the image's linear size; identity at 480x832.
    """
    ref_h, ref_w = REFERENCE_SIZE
    return int(round(shift * math.sqrt((height * width) / (ref_h * ref_w))))


def sample_motion(generator: torch.Generator | None, height: int, width: int) -> Motion:
    """Sample one Motion for images of height x width pixels.

    Draws, always all five and in this order, each from `generator` on its device
    (None: torch's global generator):
      1. torch.rand(1)            -> moving if < 0.8, else "static";
      2. torch.randint(0, 8, (1,)) -> index into MOVING_CHOICES (rotate has 2/8);
      3. torch.rand(1)            -> zoom = 1.2 + 0.8 * r;
      4. torch.randint(100, 201, (1,)) -> m, then shift = scale_shift(m, height, width);
      5. torch.rand(1)            -> angle = -20 + 40 * r degrees.
    So the generator advances by the same amount whatever kind comes out.
    """
    check_size(height, width)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise PickStyleError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    device = generator.device if generator is not None else torch.device("cpu")
    kw = {"generator": generator, "device": device}
    moving = torch.rand(1, dtype=torch.float64, **kw).item() < MOVING_PROB
    index = int(torch.randint(0, len(MOVING_CHOICES), (1,), **kw).item())
    z_lo, z_hi = ZOOM_RANGE
    zoom = z_lo + (z_hi - z_lo) * torch.rand(1, dtype=torch.float64, **kw).item()
    m = int(torch.randint(SHIFT_RANGE[0], SHIFT_RANGE[1] + 1, (1,), **kw).item())
    a_lo, a_hi = ANGLE_RANGE
    angle = a_lo + (a_hi - a_lo) * torch.rand(1, dtype=torch.float64, **kw).item()
    kind = MOVING_CHOICES[index] if moving else "static"
    return Motion(kind=kind, zoom=float(zoom), shift=scale_shift(m, height, width), angle=float(angle))


def progress(t: int, num_frames: int) -> float:
    """u = t / (T - 1) in [0, 1] for frame t of T (0 when T = 1)."""
    return 0.0 if num_frames == 1 else t / (num_frames - 1)


def crop_box(
    kind: str,
    t: int,
    num_frames: int,
    height: int,
    width: int,
    *,
    zoom: float = 1.5,
    shift: int = 150,
) -> tuple[int, int, int, int]:
    """The crop (top, left, h, w) in pixels of frame t for motion `kind`.

    zoom_in: s = z**u; zoom_out: s = z**(1-u); both centre crop (int(H/s), int(W/s)).
    Slides: crop (int(H/z), int(W/z)), shift_t = int(m * u**2):
      slide_right: top = (H-h)//2, left = min(shift_t, W-w);
      slide_left:  top = (H-h)//2, left = max(W-w-shift_t, 0);
      slide_up:    left = W-w, top = max(H-h-shift_t, 0);
      slide_down:  left = W-w, top = min(shift_t, H-h).
    rotate: the centre crop at zoom 1.5 (of the rotated frame); static: the whole frame.
    Crop sides are at least 1 pixel.
    """
    _check_kind(kind)
    _check_frames(num_frames)
    check_size(height, width)
    _check_zoom(zoom)
    _check_shift(shift)
    if not _is_int(t) or not 0 <= t < num_frames:
        raise PickStyleError(f"frame index t must be an int in [0, {num_frames}), got {t!r}")
    t, num_frames, height, width = int(t), int(num_frames), int(height), int(width)
    zoom, shift = float(zoom), int(shift)
    u = progress(t, num_frames)
    if kind == "static":
        return 0, 0, height, width
    if kind in ("zoom_in", "zoom_out", "rotate"):
        if kind == "rotate":
            s = ROTATE_ZOOM
        else:
            s = zoom**u if kind == "zoom_in" else zoom ** (1.0 - u)
        h, w = _crop_size(height, width, s)
        return (height - h) // 2, (width - w) // 2, h, w
    h, w = _crop_size(height, width, zoom)
    shift_t = int(shift * u**2)
    if kind == "slide_right":
        return (height - h) // 2, min(shift_t, width - w), h, w
    if kind == "slide_left":
        return (height - h) // 2, max(width - w - shift_t, 0), h, w
    if kind == "slide_up":
        return max(height - h - shift_t, 0), width - w, h, w
    return min(shift_t, height - h), width - w, h, w  # slide_down


def rotate_images(images: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate [B, C, H, W] images about their centre by `angle` degrees, same shape.

    Positive = counter-clockwise as seen in the image (x right, y down): a pixel at offset
    (dx, dy) from the centre ((W-1)/2, (H-1)/2) lands at
    (cos a * dx + sin a * dy, -sin a * dx + cos a * dy). Bilinear sampling (affine_grid +
    grid_sample, align_corners=False), pixels from outside the image are 0. Angle 0 returns
    `images` itself. The sampling runs in at least float32; the result has the input dtype.
    """
    _check_images(images)
    angle = float(angle)
    if not math.isfinite(angle):
        raise PickStyleError(f"angle must be a finite number of degrees, got {angle!r}")
    if angle == 0.0:
        return images
    height, width = images.shape[-2:]
    rad = math.radians(angle)
    c, s = math.cos(rad), math.sin(rad)
    # Output pixel p' samples the input at R^-1 p'; in normalised coordinates
    # (x_n = dx * 2/W, y_n = dy * 2/H) the aspect ratio enters the off-diagonal terms.
    work = torch.promote_types(images.dtype, torch.float32)
    theta = torch.tensor(
        [[c, -s * height / width, 0.0], [s * width / height, c, 0.0]], dtype=work, device=images.device
    )
    batch = images.shape[0]
    grid = F.affine_grid(theta.expand(batch, 2, 3), list(images.shape), align_corners=False)
    out = F.grid_sample(
        images.to(work), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return out.to(images.dtype)


def apply_motion(
    images: torch.Tensor,
    kind: str,
    num_frames: int,
    *,
    zoom: float = 1.5,
    shift: int = 150,
    angle: float = 10.0,
) -> torch.Tensor:
    """Animate [B, C, H, W] float images into [B, C, T, H, W] clips (T = num_frames).

    zoom: factor z >= 1 (zoom_in, zoom_out, slides); shift: maximum slide m in pixels of this
    H, W (already scaled, see `scale_shift`); angle: final rotation in degrees (rotate: frame t is
    rotated by angle * u, counter-clockwise positive, then centre-cropped at zoom 1.5; the crop
    hides the zero fill on square frames up to 20 degrees, but at 480x832 beyond ~18.5 degrees the
    crop's corners show a few pixels of it).
    Crops follow `crop_box`; each is resized back to H x W bilinearly (align_corners=False,
    antialias=False), a full-frame crop is copied exactly. Same dtype and device as `images`.
    """
    _check_images(images)
    _check_kind(kind)
    _check_frames(num_frames)
    _check_zoom(zoom)
    _check_shift(shift)
    angle = float(angle)
    if not math.isfinite(angle):
        raise PickStyleError(f"angle must be a finite number of degrees, got {angle!r}")
    batch, channels, height, width = images.shape
    if kind == "static":
        return images.unsqueeze(2).expand(batch, channels, num_frames, height, width).clone()
    out = images.new_empty((batch, channels, num_frames, height, width))
    previous_box = None
    for t in range(num_frames):
        box = crop_box(kind, t, num_frames, height, width, zoom=zoom, shift=shift)
        if kind == "rotate":
            source = rotate_images(images, angle * progress(t, num_frames))
        else:
            source = images
            if box == previous_box:  # eased slides repeat boxes: reuse the frame
                out[:, :, t] = out[:, :, t - 1]
                continue
        out[:, :, t] = _crop_resize(source, box)
        previous_box = box
    return out


def motion_pair(
    source: torch.Tensor,
    target: torch.Tensor,
    generator: torch.Generator | None,
    num_frames: int,
    enabled: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, Motion]:
    """Animate a source batch and its stylised partner with one sampled motion.

    source [B1, C, H, W], target [B2, C, H, W] (same C, H, W, dtype and device) ->
    (source clip [B1, C, T, H, W], target clip [B2, C, T, H, W], motion). With enabled=False the
    motion is "static", but the same draws are taken from `generator` (see `sample_motion`).
    """
    _check_images(source, "source")
    _check_images(target, "target")
    if source.shape[1:] != target.shape[1:]:
        raise PickStyleError(
            f"source and target must share [C, H, W], got {list(source.shape[1:])} "
            f"and {list(target.shape[1:])}"
        )
    if source.dtype != target.dtype or source.device != target.device:
        raise PickStyleError(
            f"source and target must share dtype and device, got {source.dtype}/{source.device} "
            f"and {target.dtype}/{target.device}"
        )
    height, width = source.shape[-2:]
    motion = sample_motion(generator, height, width)
    if not enabled:
        motion = replace(motion, kind="static")
    clips = apply_motion(torch.cat([source, target]), motion.kind, num_frames, **motion.as_kwargs())
    src_clip, tgt_clip = clips.split([source.shape[0], target.shape[0]])
    return src_clip, tgt_clip, motion


def _crop_resize(images: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """Crop box (top, left, h, w) of [B, C, H, W] and resize back to H x W (bilinear)."""
    top, left, h, w = box
    height, width = images.shape[-2:]
    if (h, w) == (height, width):
        return images
    crop = images[:, :, top : top + h, left : left + w]
    return F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False, antialias=False)


def _crop_size(height: int, width: int, scale: float) -> tuple[int, int]:
    return max(1, int(height / scale)), max(1, int(width / scale))


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_kind(kind) -> None:
    if kind not in MOTIONS:
        raise PickStyleError(f"unknown motion kind {kind!r}; choose one of {', '.join(MOTIONS)}")


def _check_frames(num_frames) -> None:
    if not _is_int(num_frames) or num_frames < 1:
        raise PickStyleError(f"num_frames must be an int >= 1, got {num_frames!r}")


def _check_zoom(zoom) -> None:
    if isinstance(zoom, bool) or not isinstance(zoom, numbers.Real) or not math.isfinite(zoom) or zoom < 1:
        raise PickStyleError(f"zoom must be a finite number >= 1, got {zoom!r}")


def _check_shift(shift) -> None:
    if not _is_int(shift) or shift < 0:
        raise PickStyleError(f"shift must be an int >= 0 (pixels), got {shift!r}")


def _check_images(images, name: str = "images") -> None:
    if not isinstance(images, torch.Tensor):
        raise PickStyleError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or not images.is_floating_point():
        raise PickStyleError(
            f"{name} must be a float tensor [B, C, H, W], got {images.dtype} of shape {list(images.shape)}"
        )
    if images.shape[0] < 1 or images.shape[2] < 1 or images.shape[3] < 1:
        raise PickStyleError(f"{name} must be non-empty [B, C, H, W], got shape {list(images.shape)}")
