"""Synthetic camera motion: crops, easing, rotation, pairing, sampling and errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from pickstyle.errors import PickStyleError
from pickstyle.train.motion import (
    MOTIONS,
    Motion,
    apply_motion,
    crop_box,
    motion_pair,
    rotate_images,
    sample_motion,
    scale_shift,
)

H, W = 48, 80


def _images(batch=1, height=H, width=W, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 3, height, width, generator=g) * 2 - 1).to(dtype)


def _resize(crop, height=H, width=W):
    """The reference resize, written out here independently of the module."""
    return F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False, antialias=False)


def _crop(img, top, left, h, w):
    return img[:, :, top : top + h, left : left + w]


def _centre(img, h, w):
    height, width = img.shape[-2:]
    return _crop(img, (height - h) // 2, (width - w) // 2, h, w)


def _first_last_expected(img, kind, z, m, angle):
    """Expected (first, last) frames from the method's formulas, computed by hand."""
    hz, wz = int(H / z), int(W / z)
    zoomed = _resize(_centre(img, hz, wz))
    if kind == "zoom_in":
        return img, zoomed
    if kind == "zoom_out":
        return zoomed, img
    mid_top = (H - hz) // 2
    if kind == "slide_right":
        return _resize(_crop(img, mid_top, 0, hz, wz)), _resize(_crop(img, mid_top, min(m, W - wz), hz, wz))
    if kind == "slide_left":
        return (
            _resize(_crop(img, mid_top, W - wz, hz, wz)),
            _resize(_crop(img, mid_top, max(W - wz - m, 0), hz, wz)),
        )
    if kind == "slide_up":
        return (
            _resize(_crop(img, H - hz, W - wz, hz, wz)),
            _resize(_crop(img, max(H - hz - m, 0), W - wz, hz, wz)),
        )
    if kind == "slide_down":
        return _resize(_crop(img, 0, W - wz, hz, wz)), _resize(_crop(img, min(m, H - hz), W - wz, hz, wz))
    if kind == "rotate":
        hr, wr = int(H / 1.5), int(W / 1.5)
        return _resize(_centre(img, hr, wr)), _resize(_centre(rotate_images(img, angle), hr, wr))
    return img, img  # static


@pytest.mark.parametrize("kind", MOTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_first_and_last_frames_follow_the_formulas(kind, dtype):
    img = _images(dtype=dtype)
    z, m, a = 1.6, 12, 15.0
    clip = apply_motion(img, kind, 7, zoom=z, shift=m, angle=a)
    assert clip.shape == (1, 3, 7, H, W)
    assert clip.dtype == dtype and clip.device == img.device
    first, last = _first_last_expected(img, kind, z, m, a)
    assert torch.equal(clip[:, :, 0], first)
    assert torch.equal(clip[:, :, -1], last)


def test_full_frame_crops_are_exact():
    img = _images()
    clip = apply_motion(img, "zoom_in", 5, zoom=1.3)
    assert torch.equal(clip[:, :, 0], img)
    clip = apply_motion(img, "zoom_out", 5, zoom=1.3)
    assert torch.equal(clip[:, :, -1], img)
    assert torch.equal(apply_motion(img, "rotate", 3, angle=0.0)[:, :, 1], apply_motion(img, "rotate", 1)[:, :, 0])


def test_zoom_in_intermediate_frame_uses_geometric_scale():
    img = _images()
    z, T, t = 1.8, 5, 2
    s = z ** (t / (T - 1))
    h, w = int(H / s), int(W / s)
    assert crop_box("zoom_in", t, T, H, W, zoom=z, shift=0) == ((H - h) // 2, (W - w) // 2, h, w)
    clip = apply_motion(img, "zoom_in", T, zoom=z)
    assert torch.equal(clip[:, :, t], _resize(_centre(img, h, w)))
    # zoom_out is zoom_in played backwards
    back = apply_motion(img, "zoom_out", T, zoom=z)
    assert torch.equal(back, clip.flip(2))


def test_slide_right_follows_quadratic_ease_in():
    # values = column index, so a frame's content gives away the crop's left edge
    ramp = torch.arange(W, dtype=torch.float64).expand(1, 3, H, W).contiguous()
    z, m, T = 2.0, 40, 9
    w = int(W / z)
    clip = apply_motion(ramp, "slide_right", T, zoom=z, shift=m)
    x = W // 2  # away from the clamped borders of the resize
    offset = (x + 0.5) * w / W - 0.5  # where column x samples inside the crop
    lefts = [round(float(clip[0, 0, t, H // 2, x]) - offset) for t in range(T)]
    expected = [int(m * (t / (T - 1)) ** 2) for t in range(T)]
    assert lefts == expected
    steps = [b - a for a, b in zip(lefts, lefts[1:])]
    assert all(b >= a for a, b in zip(steps, steps[1:]))  # displacement per frame grows
    assert steps[-1] > steps[0]
    # a shift larger than the room left is clamped at the image border
    clip = apply_motion(ramp, "slide_right", T, zoom=z, shift=500)
    assert round(float(clip[0, 0, -1, H // 2, x]) - offset) == W - w


def test_slide_crop_boxes():
    z, m, T = 1.5, 30, 4
    h, w = int(H / z), int(W / z)
    for t in range(T):
        s = int(m * (t / (T - 1)) ** 2)
        assert crop_box("slide_right", t, T, H, W, zoom=z, shift=m) == ((H - h) // 2, min(s, W - w), h, w)
        assert crop_box("slide_left", t, T, H, W, zoom=z, shift=m) == ((H - h) // 2, max(W - w - s, 0), h, w)
        assert crop_box("slide_up", t, T, H, W, zoom=z, shift=m) == (max(H - h - s, 0), W - w, h, w)
        assert crop_box("slide_down", t, T, H, W, zoom=z, shift=m) == (min(s, H - h), W - w, h, w)
    assert crop_box("static", 1, T, H, W, zoom=z, shift=m) == (0, 0, H, W)
    assert crop_box("rotate", 1, T, H, W, zoom=z, shift=m) == ((H - 32) // 2, (W - 53) // 2, 32, 53)


def test_single_frame_clip_is_the_first_frame():
    img = _images()
    for kind in MOTIONS:
        clip = apply_motion(img, kind, 1, zoom=1.7, shift=20, angle=12.0)
        assert clip.shape == (1, 3, 1, H, W)
        assert torch.equal(clip[:, :, 0], apply_motion(img, kind, 6, zoom=1.7, shift=20, angle=12.0)[:, :, 0])


def _centroid(img):
    ys = torch.arange(img.shape[-2], dtype=img.dtype)[:, None]
    xs = torch.arange(img.shape[-1], dtype=img.dtype)[None, :]
    mass = img.sum()
    return float((img * ys).sum() / mass), float((img * xs).sum() / mass)


@pytest.mark.parametrize("angle", [30.0, -20.0, 90.0])
def test_rotation_moves_a_marked_pixel_where_the_formula_says(angle):
    img = torch.zeros(1, 1, 40, 64, dtype=torch.float64)
    row, col = 14, 40
    img[0, 0, row, col] = 1.0
    out = rotate_images(img, angle)
    cy, cx = (40 - 1) / 2, (64 - 1) / 2
    dx, dy = col - cx, row - cy
    a = math.radians(angle)
    x_exp = cx + math.cos(a) * dx + math.sin(a) * dy
    y_exp = cy - math.sin(a) * dx + math.cos(a) * dy
    y, x = _centroid(out[0, 0])
    assert abs(x - x_exp) <= 1.0 and abs(y - y_exp) <= 1.0
    peak = int(out[0, 0].argmax())
    assert abs(peak // 64 - y_exp) <= 1.0 and abs(peak % 64 - x_exp) <= 1.0


def test_positive_angle_is_counter_clockwise():
    img = torch.zeros(1, 1, 33, 33)
    img[0, 0, 16, 28] = 1.0  # right of the centre (16, 16)
    out = rotate_images(img, 90.0)
    peak = int(out[0, 0].argmax())
    assert (peak // 33, peak % 33) == (4, 16)  # now above the centre
    assert torch.equal(rotate_images(img, 0.0), img)


def test_rotation_fills_outside_with_zero():
    ones = torch.ones(1, 3, H, W, dtype=torch.float64)
    angle = 20.0
    out = rotate_images(ones, angle)[0, 0]
    a = math.radians(angle)
    cy, cx = (H - 1) / 2, (W - 1) / 2
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    # where each output pixel samples the input (the inverse rotation)
    dx, dy = xs - cx, ys - cy
    sx = cx + math.cos(a) * dx - math.sin(a) * dy
    sy = cy + math.sin(a) * dx + math.cos(a) * dy
    inside = (sx >= 0.01) & (sx <= W - 1.01) & (sy >= 0.01) & (sy <= H - 1.01)
    outside = (sx < -1) | (sx > W) | (sy < -1) | (sy > H)
    assert outside.any() and inside.any()
    assert torch.allclose(out[inside], torch.ones((), dtype=out.dtype), atol=1e-9)
    assert torch.all(out[outside] == 0)


def test_rotate_crop_hides_the_fill_on_a_square_image():
    ones = torch.ones(1, 3, 48, 48)
    clip = apply_motion(ones, "rotate", 5, angle=20.0)
    assert torch.allclose(clip, torch.ones_like(clip), atol=1e-5)
    clip = apply_motion(ones, "rotate", 5, angle=-20.0)
    assert torch.allclose(clip, torch.ones_like(clip), atol=1e-5)


def test_rotate_intermediate_frame_is_linear_in_angle():
    img = _images()
    T, t, a = 5, 3, 16.0
    clip = apply_motion(img, "rotate", T, angle=a)
    hr, wr = int(H / 1.5), int(W / 1.5)
    expected = _resize(_centre(rotate_images(img, a * t / (T - 1)), hr, wr))
    assert torch.equal(clip[:, :, t], expected)


def test_static_repeats_the_image():
    img = _images(batch=2)
    clip = apply_motion(img, "static", 4)
    assert clip.shape == (2, 3, 4, H, W)
    for t in range(4):
        assert torch.equal(clip[:, :, t], img)
    clip[0, 0, 0, 0, 0] = 99.0  # a real copy, not a view of the input
    assert img[0, 0, 0, 0] != 99.0


@pytest.mark.parametrize("kind", MOTIONS)
def test_batch_equals_each_image_alone(kind):
    img = _images(batch=2, seed=3)
    clip = apply_motion(img, kind, 4, zoom=1.4, shift=10, angle=-12.0)
    for b in range(2):
        alone = apply_motion(img[b : b + 1], kind, 4, zoom=1.4, shift=10, angle=-12.0)
        assert torch.allclose(clip[b : b + 1], alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", range(12))
def test_pair_gets_the_same_transform(seed):
    source, target = _images(batch=2, seed=1), _images(batch=1, seed=2)
    g = torch.Generator().manual_seed(seed)
    src_clip, tgt_clip, m = motion_pair(source, target, g, 5)
    assert isinstance(m, Motion)
    assert src_clip.shape == (2, 3, 5, H, W) and tgt_clip.shape == (1, 3, 5, H, W)
    assert torch.allclose(src_clip, apply_motion(source, m.kind, 5, **m.as_kwargs()), rtol=0, atol=1e-6)
    assert torch.allclose(tgt_clip, apply_motion(target, m.kind, 5, **m.as_kwargs()), rtol=0, atol=1e-6)
    assert m == sample_motion(torch.Generator().manual_seed(seed), H, W)


def test_pair_rejects_mismatched_sizes():
    with pytest.raises(PickStyleError, match="source and target"):
        motion_pair(_images(), _images(height=40), torch.Generator().manual_seed(0), 3)


def test_disabled_pair_is_static_and_consumes_the_same_draws():
    source, target = _images(seed=1), _images(seed=2)
    for seed in range(20):
        g_on, g_off = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        _, _, on = motion_pair(source, target, g_on, 3)
        src_clip, tgt_clip, off = motion_pair(source, target, g_off, 3, enabled=False)
        assert off.kind == "static"
        assert (off.zoom, off.shift, off.angle) == (on.zoom, on.shift, on.angle)
        assert torch.equal(src_clip, source.unsqueeze(2).expand(-1, -1, 3, -1, -1))
        assert torch.equal(tgt_clip, target.unsqueeze(2).expand(-1, -1, 3, -1, -1))
        assert torch.equal(torch.rand(4, generator=g_on), torch.rand(4, generator=g_off))


def test_sampling_is_deterministic_and_consumes_a_fixed_stream():
    a = [sample_motion(torch.Generator().manual_seed(7), 480, 832) for _ in range(2)]
    assert a[0] == a[1]
    g = torch.Generator().manual_seed(5)
    sample_motion(g, 480, 832)
    ref = torch.Generator().manual_seed(5)
    torch.rand(1, generator=ref, dtype=torch.float64)
    torch.randint(0, 8, (1,), generator=ref)
    torch.rand(1, generator=ref, dtype=torch.float64)
    torch.randint(100, 201, (1,), generator=ref)
    torch.rand(1, generator=ref, dtype=torch.float64)
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=ref))


def test_kind_frequencies_and_parameter_ranges():
    g = torch.Generator().manual_seed(1234)
    n, height, width = 4000, 240, 416
    draws = [sample_motion(g, height, width) for _ in range(n)]
    freq = {k: sum(d.kind == k for d in draws) / n for k in MOTIONS}
    for kind in MOTIONS:
        expected = 0.2 if kind in ("static", "rotate") else 0.1
        assert abs(freq[kind] - expected) < 0.03, (kind, freq[kind])
    lo, hi = scale_shift(100, height, width), scale_shift(200, height, width)
    assert (lo, hi) == (50, 100)  # half the side length -> half the shift
    assert all(1.2 <= d.zoom <= 2.0 for d in draws)
    assert all(lo <= d.shift <= hi for d in draws)
    assert all(-20.0 <= d.angle <= 20.0 for d in draws)
    assert {d.shift for d in draws} >= {lo, hi}
    zooms = [d.zoom for d in draws]
    assert min(zooms) < 1.25 and max(zooms) > 1.95
    angles = [d.angle for d in draws]
    assert min(angles) < -19 and max(angles) > 19


def test_shift_scaling_rule():
    assert scale_shift(150, 480, 832) == 150
    assert scale_shift(200, 960, 1664) == 400
    assert scale_shift(100, 480, 208) == round(100 * math.sqrt(480 * 208 / (480 * 832)))
    assert sample_motion(torch.Generator().manual_seed(0), 480, 832).shift in range(100, 201)


def test_motion_kwargs_round_trip():
    m = Motion("slide_up", 1.5, 20, 3.0)
    assert m.as_kwargs() == {"zoom": 1.5, "shift": 20, "angle": 3.0}
    with pytest.raises(PickStyleError, match="spin"):
        Motion("spin", 1.5, 20, 3.0)


def test_bad_arguments():
    img = _images()
    with pytest.raises(PickStyleError, match="'spin'"):
        apply_motion(img, "spin", 3)
    with pytest.raises(PickStyleError, match="num_frames"):
        apply_motion(img, "zoom_in", 0)
    with pytest.raises(PickStyleError, match="zoom"):
        apply_motion(img, "zoom_in", 3, zoom=0.5)
    with pytest.raises(PickStyleError, match="shift"):
        apply_motion(img, "slide_left", 3, shift=-1)
    with pytest.raises(PickStyleError, match="images"):
        apply_motion(img[0], "static", 3)
    with pytest.raises(PickStyleError, match="images"):
        apply_motion(img.to(torch.uint8), "static", 3)
    with pytest.raises(PickStyleError, match="frame index"):
        crop_box("zoom_in", 5, 5, H, W, zoom=1.5, shift=0)
    with pytest.raises(PickStyleError, match="height"):
        sample_motion(torch.Generator(), 0, 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda():
    img = _images(batch=2).cuda()
    g = torch.Generator().manual_seed(0)
    src, tgt, m = motion_pair(img, img, g, 4)
    assert src.device == img.device and tgt.device == img.device
    for kind in MOTIONS:
        clip = apply_motion(img, kind, 4, zoom=1.5, shift=10, angle=10.0)
        ref = apply_motion(img.cpu(), kind, 4, zoom=1.5, shift=10, angle=10.0)
        assert clip.device == img.device
        assert torch.allclose(clip.cpu(), ref, atol=1e-4)
