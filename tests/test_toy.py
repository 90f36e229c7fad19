"""Toy styles: deterministic, shape-preserving, far from the source and from each other."""

import numpy as np
import pytest

from pickstyle.settings import style_prompt
from pickstyle.toy.scenes import STYLES

from .conftest import moving_square_video


def _psnr(a, b):
    mse = ((a.astype(np.float64) - b) ** 2).mean()
    return 10 * np.log10(255**2 / max(mse, 1e-12))


@pytest.fixture(scope="module")
def scene():
    """A colourful frame: gradient sky, stripes, a red square (from the test video) and noise."""
    frame = moving_square_video(num_frames=1, height=72, width=96, seed=3)[0].astype(np.float32)
    yy, xx = np.mgrid[0:72, 0:96]
    frame[..., 1] += 120 * (yy / 72)
    frame[..., 2] += 100 * ((xx // 12) % 2)
    return np.clip(frame, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", list(STYLES))
def test_style_is_deterministic_and_keeps_the_shape(name, scene):
    out = STYLES[name](scene)
    assert out.shape == scene.shape and out.dtype == np.uint8
    assert np.array_equal(out, STYLES[name](scene.copy()))
    odd = STYLES[name](scene[:31, :45])
    assert odd.shape == (31, 45, 3)


@pytest.mark.parametrize("name", list(STYLES))
def test_style_moves_the_picture_far_from_the_source(name, scene):
    assert _psnr(STYLES[name](scene), scene) < 15.0


def test_styles_are_distinct_from_each_other(scene):
    outs = {name: fn(scene) for name, fn in STYLES.items()}
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert _psnr(outs[a], outs[b]) < 20.0, (a, b)


def test_styles_depend_on_the_content(scene):
    other = np.ascontiguousarray(scene[:, ::-1])
    for name, fn in STYLES.items():
        assert not np.array_equal(fn(scene), fn(other)), name


def test_prompt_format():
    assert style_prompt("night vision", "a red square") == "night vision style. a red square"


def test_scene_clips_are_seeded_move_and_are_described():
    from pickstyle.toy.scenes import COLOURS, make_scene_clip

    a, text_a = make_scene_clip(np.random.default_rng(5), 9, 64, 80)
    b, text_b = make_scene_clip(np.random.default_rng(5), 9, 64, 80)
    assert a.shape == (9, 64, 80, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and text_a == text_b
    assert np.abs(a[0].astype(int) - a[-1]).mean() > 1  # objects move, the camera pans
    assert any(c in text_a for c in COLOURS) and "moving" in text_a
    still, text = make_scene_clip(np.random.default_rng(5), 3, 64, 80, motion=False)
    assert np.array_equal(still[0], still[2]) and "moving" not in text
    c, _ = make_scene_clip(np.random.default_rng(6), 1, 64, 80)
    assert not np.array_equal(a[:1], c)
