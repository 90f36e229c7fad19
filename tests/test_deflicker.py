"""The flow-guided deflicker: exact on a still scene, steadier and nearer the clean video on a moving one."""

import numpy as np
import pytest

from pickstyle.errors import PickStyleError
from pickstyle.eval.metrics import warp_error
from pickstyle.toy.quality import psnr
from pickstyle.video.postprocess import deflicker


def _textured(height, width, seed=0):
    """uint8 [H, W, 3]: smooth blobs DIS can track."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width]
    img = np.zeros((height, width, 3))
    for _ in range(12):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(3, 8)
        img += rng.uniform(40, 120, 3) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))[..., None]
    return np.clip(img + 30, 0, 255).astype(np.uint8)


def _flickering(clean, seed=1, amount=25):
    """clean frames with a brightness jump per frame (the flicker), uint8."""
    jumps = np.random.default_rng(seed).uniform(-amount, amount, len(clean))
    return np.clip(clean.astype(float) + jumps[:, None, None, None], 0, 255).astype(np.uint8)


def test_still_scene_is_an_exponential_average_of_the_frames():
    source = np.repeat(_textured(48, 64)[None], 5, axis=0)
    noisy = _flickering(source)
    out = deflicker(noisy, source, 0.5)
    expected = [noisy[0].astype(float)]
    for frame in noisy[1:]:
        expected.append(0.5 * frame + 0.5 * expected[-1])
    assert np.abs(out.astype(float) - np.rint(expected)).max() <= 1
    assert np.array_equal(deflicker(noisy, source, 0.0), noisy)  # strength 0: unchanged
    assert np.array_equal(deflicker(noisy / 255.0, source, 0.5), out)  # float frames in [0, 1], as a pipeline returns them


def test_moving_scene_flickers_less_and_comes_nearer_the_clean_video():
    big = _textured(64, 160)
    source = np.stack([big[8:56, 4 * t : 4 * t + 80] for t in range(9)])  # the camera pans 4 px a frame
    noisy = _flickering(source)
    out = deflicker(noisy, source, 0.6)
    assert warp_error(out, source) < 0.6 * warp_error(noisy, source)
    assert psnr(out, source) > psnr(noisy, source) + 1
    # a source of another size is resized for the flow: the same result as the source at the output's size
    bigger = np.repeat(np.repeat(source, 2, axis=1), 2, axis=2)
    assert psnr(deflicker(noisy, bigger, 0.6), source) > psnr(noisy, source) + 1


@pytest.mark.parametrize(("strength", "frames", "named"), [(1.0, 5, "strength 1"), (-0.1, 5, "strength -0.1"), (0.5, 4, "4 frames, the source 5")])
def test_bad_strength_or_frame_count_names_it(strength, frames, named):
    source = np.repeat(_textured(32, 32)[None], 5, axis=0)
    with pytest.raises(PickStyleError, match=named):
        deflicker(source[:frames], source, strength)
