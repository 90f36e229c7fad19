"""Metrics pinned on synthetic videos whose answer is known, and on tiny random CLIP/DINO folders."""

import json
import math

import cv2
import numpy as np
import pytest

from pickstyle.errors import PickStyleError
from pickstyle.eval import metrics as M
from pickstyle.eval import models
from pickstyle.testing import build_tiny_clip, build_tiny_dino
from pickstyle.video import align, flow
from pickstyle.video.io import write_video

# Per-frame shifts (dx, dy) in pixels: the motion varies from frame to frame.
SHIFTS = [(2, 0), (0, 2), (-2, 1), (1, -2), (3, 0), (0, -1), (-1, -1)]


def texture(height, width, seed=0, sigma=2.5):
    """Smooth random noise in [0, 1] (a pattern optical flow can follow)."""
    noise = np.random.default_rng(seed).random((height, width)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigma)
    noise -= noise.min()
    return noise / noise.max()


def moving_video(shifts, height=64, width=96, pad=48, seed=0):
    """uint8 [len(shifts)+1, H, W, 3]: a coloured texture whose content moves by shifts[t] from
    frame t to t+1 (frame_t+1(x + shift) = frame_t(x)); the colour is linear in one pattern."""
    pattern = texture(height + 2 * pad, width + 2 * pad, seed)
    x = y = 0
    frames = []
    for t in range(len(shifts) + 1):
        crop = pattern[pad - y : pad - y + height, pad - x : pad - x + width]
        frames.append(crop[..., None] * np.array([180, 140, 100]) + np.array([40, 60, 80]))
        if t < len(shifts):
            x, y = x + shifts[t][0], y + shifts[t][1]
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def video():
    return moving_video(SHIFTS)


def scores(out, src):
    return {"warp": M.warp_error(out, src), "flicker": M.flicker(out, src),
            "edge": M.edge_ssim(out, src), "flow": M.flow_correlation(out, src)}


@pytest.fixture(scope="module")
def clean(video):
    return scores(video, video)


# ---------------------------------------------------------------- no-weight metrics


def test_flow_recovers_a_known_shift():
    v = moving_video([(2, 1)] * 4)
    fwd = flow.video_flow(v)[:, 8:-8, 8:-8]
    bwd = flow.video_flow(v, backward=True)[:, 8:-8, 8:-8]
    assert fwd.shape == (4, 48, 80, 2)
    assert np.allclose(fwd.reshape(-1, 2).mean(0), [2, 1], atol=0.3)
    assert np.allclose(bwd.reshape(-1, 2).mean(0), [-2, -1], atol=0.3)
    farneback = flow.optical_flow(v[0], v[1], method="farneback")[8:-8, 8:-8]
    assert np.allclose(farneback.reshape(-1, 2).mean(0), [2, 1], atol=0.3)


def test_video_against_itself(video, clean):
    floor = M.warp_error(video, video)
    assert clean["warp"] == pytest.approx(floor) and 0 <= floor < 0.01
    assert clean["flicker"] == 0.0
    assert clean["edge"] == pytest.approx(1.0, abs=1e-6)
    assert clean["flow"] == pytest.approx(1.0, abs=1e-9)


def test_flickering_copy_raises_flicker_and_warp_error(video, clean):
    offsets = np.array([40 if t % 2 else -40 for t in range(len(video))])
    flickering = np.clip(video.astype(int) + offsets[:, None, None, None], 0, 255).astype(np.uint8)
    s = scores(flickering, video)
    assert s["flicker"] > 0.2 > clean["flicker"] + 0.1
    assert s["warp"] > 0.2 and s["warp"] > clean["warp"] + 0.1
    assert s["edge"] > 0.95 and s["flow"] > 0.95  # structure and motion are intact


@pytest.mark.parametrize("change", ["permute", "tint"])
def test_colour_change_keeps_structure_and_motion(video, change):
    out = video[..., ::-1].copy() if change == "permute" else np.clip(video.astype(int) + [30, -20, 10], 0, 255).astype(np.uint8)
    s = scores(out, video)
    assert s["edge"] > 0.9
    assert s["flow"] > 0.95
    assert 0 <= s["flicker"] < 0.01


def test_heavy_noise_breaks_structure_and_motion(video, clean):
    noisy = np.clip(video + np.random.default_rng(1).normal(0, 60, video.shape), 0, 255).astype(np.uint8)
    s = scores(noisy, video)
    assert s["edge"] < 0.5
    assert s["flow"] < clean["flow"] - 0.02
    assert s["warp"] > clean["warp"] + 0.1


def test_wrong_motion_has_low_flow_correlation(video):
    other = moving_video(SHIFTS[::-1][1:] + SHIFTS[:1], seed=3)
    assert M.flow_correlation(other, video) < 0.5
    static = np.repeat(video[:1], len(video), axis=0)
    assert abs(M.flow_correlation(static, video)) < 0.2


def test_metrics_ranges_and_bad_input(video):
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, video.shape, dtype=np.uint8) for _ in range(2))
    s = scores(a, b)
    # two unrelated noise videos: no temporal consistency, structure or motion in common (measured 0.29, 0.02,
    # 0.05), but changes of the same size frame to frame, so no flicker against each other (0.002)
    assert s["warp"] > 0.2 and abs(s["edge"]) < 0.2 and abs(s["flow"]) < 0.2 and s["flicker"] < 0.01
    with pytest.raises(PickStyleError, match="align_videos"):
        M.edge_ssim(video[:, :32], video)
    with pytest.raises(PickStyleError, match="at least 2"):
        M.warp_error(video[:1], video[:1])
    with pytest.raises(PickStyleError, match=r"\[T, H, W, 3\]"):
        M.flicker(video[..., :2], video[..., :2])


# ---------------------------------------------------------------- alignment


def test_align_videos_arrays(video):
    small = np.ascontiguousarray(video[::2, ::2, ::2])  # 4 frames, 48x32
    sty, src, notes = align.align_videos(small, video)
    assert sty.shape == src.shape == (4, 32, 48, 3)
    assert np.array_equal(sty, small)
    assert any("4 frames" in n and "8" in n for n in notes)
    assert any("resized source 96x64 -> 48x32" in n for n in notes)
    same = align.align_videos(video, video)
    assert same[2] == [] and same[0].shape == video.shape
    sty, src, notes = align.align_videos(video, video[:, :, :95], size=(40, 60))
    assert sty.shape == src.shape == (8, 40, 60, 3)
    assert any("aspect" in n for n in notes)


def test_load_pair_different_length_size_and_fps(tmp_path, video):
    long = moving_video([(1, 0)] * 11, height=48, width=64)  # 12 frames
    src_path, sty_path = tmp_path / "source.mp4", tmp_path / "stylised.mp4"
    write_video(src_path, long, fps=24.0)
    write_video(sty_path, np.ascontiguousarray(video[:, :32, :48]), fps=16.0)  # 8 frames, 48x32
    src, sty, notes = align.load_pair(src_path, sty_path)
    assert src.shape == sty.shape == (8, 32, 48, 3)
    text = " | ".join(notes)
    assert "stylised has 8 frames, source 12" in text
    assert "frame rates differ" in text and "resized source 64x48 -> 48x32" in text

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 10)
    with pytest.raises(PickStyleError, match="broken.mp4") as err:
        align.load_pair(src_path, bad)
    assert "\n" not in str(err.value)
    with pytest.raises(PickStyleError, match="missing.mp4"):
        M.evaluate(tmp_path / "missing.mp4", sty_path)


def test_evaluate_without_weights(tmp_path, video):
    src_path, sty_path = tmp_path / "src.mp4", tmp_path / "out.mp4"
    write_video(src_path, video, fps=16.0)
    write_video(sty_path, video[..., ::-1].copy(), fps=16.0)
    result = M.evaluate(src_path, sty_path, prompt="anime style. a texture")
    assert set(result) >= {"metrics", "directions", "notes", "settings"}
    keys = {"warp_error", "warp_error_source", "flicker", "edge_ssim", "flow_correlation"}
    assert set(result["metrics"]) == keys
    assert result["directions"] == {"warp_error": "lower", "warp_error_source": "lower", "flicker": "lower",
                                    "edge_ssim": "higher", "flow_correlation": "higher"}
    assert all(math.isfinite(v) for v in result["metrics"].values())
    assert result["metrics"]["edge_ssim"] > 0.9
    assert any("no clip_dir" in n and "clip_score" in n for n in result["notes"])
    assert result["settings"]["frames"] == len(video)
    json.dumps(result)  # JSON-ready


def test_registry_and_custom_metric(video):
    assert {"warp_error", "warp_error_source", "flicker", "edge_ssim", "flow_correlation", "clip_score",
            "clip_consistency", "dino_structure", "r_precision_top1", "r_precision_top2",
            "r_precision_top3"} <= set(M.METRICS)
    assert M.METRICS["dino_structure"].direction == "lower" and M.METRICS["dino_structure"].range == (0.0, 4.0)
    try:
        @M.register_metric("mean_abs_diff", "lower", (0.0, 1.0), needs=("mine",))
        def _mad(x):
            assert x.folders["mine"] == "/some/checkpoint"
            return float(np.abs(x.stylised.astype(int) - x.source).mean() / 255)

        with pytest.raises(PickStyleError, match="already registered"):
            M.register_metric("mean_abs_diff", "lower", (0.0, 1.0))(_mad)
        r = M.evaluate_frames(video, video, metrics=["edge_ssim", "mean_abs_diff"])
        assert set(r["metrics"]) == {"edge_ssim"} and any("mean_abs_diff" in n for n in r["notes"])
        r = M.evaluate_frames(video, video, folders={"mine": "/some/checkpoint"}, metrics=["mean_abs_diff"])
        assert r["metrics"] == {"mean_abs_diff": 0.0} and r["directions"] == {"mean_abs_diff": "lower"}
    finally:
        M.METRICS.pop("mean_abs_diff", None)
    with pytest.raises(PickStyleError, match="unknown"):
        M.evaluate_frames(video, video, metrics=["nope"])
    single = M.evaluate_frames(video[:1], video[:1])  # one frame: no temporal metrics
    assert set(single["metrics"]) == {"edge_ssim"}
    assert any("a single frame" in n and "warp_error" in n for n in single["notes"])


def test_resolve_true_style():
    styles = ["anime", "3d chibi", "chibi", "clay"]
    assert models.resolve_true_style(styles, prompt="3D Chibi style. a girl") == 1
    assert models.resolve_true_style(styles, prompt="a clay figure, anime-like") == 0  # the longest name found wins
    assert models.resolve_true_style(styles, true_style="Clay") == 3
    assert models.resolve_true_style(styles, true_style=2) == 2
    with pytest.raises(PickStyleError, match="names none"):
        models.resolve_true_style(styles, prompt="lego style")
    with pytest.raises(PickStyleError, match="not one of"):
        models.resolve_true_style(styles, true_style="lego")


# ---------------------------------------------------------------- CLIP and DINO (tiny random folders)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("metric-models")
    return {"clip": build_tiny_clip(root / "tiny-clip"), "dino": build_tiny_dino(root / "tiny-dino")}


def test_clip_metrics(model_dirs, video):
    clip = model_dirs["clip"]
    score = models.clip_score(video, "anime style. a man boxing", clip)
    assert math.isfinite(score)
    assert models.clip_consistency(np.repeat(video[:1], 4, axis=0), clip) == pytest.approx(1.0, abs=1e-5)
    assert models.clip_consistency(video, clip) < 1 - 1e-4  # frames that change are less alike
    styles = ["anime", "pixar", "clay", "lego"]
    r = models.clip_r_precision(video, styles, 2, clip)
    assert set(r) == {"top1", "top2", "top3"} and all(v in (0.0, 1.0) for v in r.values())
    assert r["top1"] <= r["top2"] <= r["top3"]
    # the four ranks of the four styles: exactly one is first, two in the top 2, three in the top 3
    ranks = [models.clip_r_precision(video, styles, i, clip) for i in range(4)]
    assert [sum(x[f"top{k}"] for x in ranks) for k in (1, 2, 3)] == [1, 2, 3]


def test_dino_structure(model_dirs, video):
    dino = model_dirs["dino"]
    other = moving_video(SHIFTS, seed=5)
    assert models.dino_structure(video, video, dino) == 0.0
    d_ab, d_ba = models.dino_structure(video, other, dino), models.dino_structure(other, video, dino)
    assert 0 < d_ab <= 4 and d_ab == pytest.approx(d_ba, rel=1e-6)


def test_model_folder_errors(model_dirs, tmp_path, video):
    with pytest.raises(PickStyleError, match="tiny-dino.*model_type 'dinov2' is not a CLIP model"):
        models.clip_score(video, "a prompt", model_dirs["dino"])
    with pytest.raises(PickStyleError, match="tiny-clip.*not a DINO model"):
        models.dino_structure(video, video, model_dirs["clip"])
    with pytest.raises(PickStyleError, match="no-such-clip: no such CLIP folder"):
        models.clip_consistency(video, tmp_path / "no-such-clip")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PickStyleError, match="empty: no config.json"):
        models.load_dino(empty)
    broken = tmp_path / "broken-clip"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(PickStyleError, match="broken-clip: cannot load the CLIP model") as err:
        models.load_clip(broken)
    assert "\n" not in str(err.value)


def test_evaluate_with_models_loads_each_once(model_dirs, tmp_path, video, monkeypatch):
    src_path, sty_path = tmp_path / "src.mp4", tmp_path / "out.mp4"
    write_video(src_path, video, fps=16.0)
    write_video(sty_path, video[..., ::-1].copy(), fps=16.0)
    monkeypatch.setattr(models, "_MODELS", {})  # a fresh cache
    from transformers import CLIPModel

    loads = []
    original = CLIPModel.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        loads.append(args[0])
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(CLIPModel, "from_pretrained", classmethod(counting))
    kwargs = {"prompt": "clay style. a texture", "clip_dir": model_dirs["clip"], "dino_dir": model_dirs["dino"],
              "styles": ["anime", "pixar", "clay"]}
    for _ in range(2):
        result = M.evaluate(src_path, sty_path, **kwargs)
    assert len(loads) == 1
    expected = {"warp_error": "lower", "warp_error_source": "lower", "flicker": "lower", "edge_ssim": "higher",
                "flow_correlation": "higher", "clip_score": "higher", "clip_consistency": "higher",
                "dino_structure": "lower", "r_precision_top1": "higher", "r_precision_top2": "higher",
                "r_precision_top3": "higher"}
    assert result["directions"] == expected and set(result["metrics"]) == set(expected)
    for key, value in result["metrics"].items():
        low, high = M.METRICS[key].range
        assert math.isfinite(value) and low <= value <= high, key
    assert result["settings"]["true_style"] == "clay"
    assert result["metrics"]["r_precision_top3"] == 1.0  # 3 styles: always in the top 3
    json.dumps(result)
