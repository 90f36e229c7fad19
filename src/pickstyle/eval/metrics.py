"""Scores of a stylised video against its source (`pickstyle eval`).

Frames are RGB uint8 arrays [T, H, W, 3]; a pair of videos is compared frame by frame after
`align_videos` (same frame count at the same relative times, same size).

No weights needed (numpy / OpenCV):
  warp_error        temporal consistency: the stylised frame t+1 warped onto t with the SOURCE flow,
                    mean |difference| / 255 over non-occluded pixels. Lower is better, [0, 1];
                    `warp_error_source` is the same for the source itself (the floor).
  flicker           how far the output's frame-to-frame changes differ from the source's.
                    Lower is better, [0, 1]; 0 when they match.
  edge_ssim         structure kept: SSIM of normalised Sobel gradient maps. Higher is better, [-1, 1].
  flow_correlation  motion kept: Pearson correlation of the optical flows. Higher is better, [-1, 1].
With local transformers folders (never downloaded):
  clip_score        100 * max(cos(image, prompt), 0) per frame, CLIP. Higher is better, [0, 100].
  clip_consistency  cos of CLIP embeddings of consecutive frames. Higher is better, [-1, 1].
  dino_structure    DINO self-similarity distance of the patch tokens. Lower is better, [0, 4].
  r_precision_top1/2/3  zero-shot CLIP style ranking of the middle frame. Higher is better, {0, 1}.

More metrics (DreamSim, CSD, ...) are added with `register_metric`; `evaluate` computes every
registered metric whose needs are met.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pickstyle.errors import PickStyleError
from pickstyle.eval.models import (
    CLIP_TYPES,
    DINO_TYPES,
    check_model_folder,
    check_styles,
    clip_consistency,
    clip_r_precision,
    clip_score,
    dino_structure,
    resolve_device,
    resolve_true_style,
)  # fmt: skip
from pickstyle.video.align import align_videos, gray, load_pair, luma, pair_frames
from pickstyle.video.flow import flow_warp, video_flow


def warp_error(stylised, source, flows=None, method: str = "dis") -> float:
    """Temporal warping error (lower is better, range [0, 1]).

    With f = flow(src_t -> src_t+1) and b = flow(src_t+1 -> src_t), both computed on the SOURCE:
    W_t(x) = sty_t+1(x + f(x)) (cv2.remap, bilinear); a pixel is valid where x + f(x) lies in the
    frame and |f(x) + b(x+f(x))|^2 < 0.01 (|f(x)|^2 + |b(x+f(x))|^2) + 0.5 (not occluded).
    error_t = mean over valid pixels and channels of |sty_t - W_t| / 255; warp_error = mean_t error_t
    (pairs with no valid pixel are skipped; NaN when none has one). `flows`: (forward, backward) as
    from video_flow, to reuse them.
    """
    sty, src = pair_frames(stylised, source, min_frames=2)
    fwd, bwd = flows if flows is not None else (video_flow(src, method=method), video_flow(src, True, method))
    errors = []
    for t in range(len(src) - 1):
        warped, valid = flow_warp(sty[t + 1], fwd[t], bwd[t])
        if valid.any():
            diff = np.abs(sty[t].astype(np.float32) - warped)[valid]
            errors.append(float(diff.mean()) / 255.0)
    return float(np.mean(errors)) if errors else float("nan")


def flicker(stylised, source) -> float:
    """Flicker relative to the source (lower is better, range [0, 1]; 0 when the output's
    temporal changes match the source's).

    For a video v: d_v(t) = mean |v_t+1 - v_t| / 255 over pixels and channels (frame change),
    l_v(t) = |mean luma(v_t+1) - mean luma(v_t)| / 255 (brightness change, Rec. 601 luma).
    flicker = mean_t ( |d_out(t) - d_src(t)| + |l_out(t) - l_src(t)| ) / 2.
    """
    sty, src = pair_frames(stylised, source, min_frames=2)

    def changes(v):
        d = np.array([np.abs(v[t + 1].astype(np.int16) - v[t]).mean() for t in range(len(v) - 1)]) / 255.0
        m = luma(v).mean(axis=(1, 2))
        return d, np.abs(np.diff(m)) / 255.0

    d_out, l_out = changes(sty)
    d_src, l_src = changes(src)
    return float(np.mean((np.abs(d_out - d_src) + np.abs(l_out - l_src)) / 2.0))


def _edge_map(frame: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of the grayscale frame, divided by its 99th percentile, clipped to [0, 1]."""
    import cv2

    g = gray(frame).astype(np.float32) / 255.0
    mag = np.sqrt(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) ** 2 + cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) ** 2)
    scale = float(np.percentile(mag, 99))
    if scale <= 1e-6:
        scale = float(mag.max())
    return np.clip(mag / scale, 0.0, 1.0) if scale > 1e-6 else np.zeros_like(mag)


def ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> float:
    """Mean SSIM of two single-channel float maps in [0, 1] (Gaussian window, sigma 1.5, 11x11;
    C1 = 0.01^2, C2 = 0.03^2)."""
    import cv2

    def blur(x):
        return cv2.GaussianBlur(x, (11, 11), sigma, borderType=cv2.BORDER_REFLECT)

    a, b = a.astype(np.float32), b.astype(np.float32)
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(np.clip(s, -1.0, 1.0).mean())


def edge_ssim(stylised, source) -> float:
    """Structure kept (higher is better, range [-1, 1], in practice [0, 1]).

    E(v) = |Sobel(gray v)| / percentile_99 (clipped to [0, 1]), so colour and contrast changes
    do not count; edge_ssim = mean_t SSIM(E(src_t), E(out_t)) (Gaussian window sigma 1.5).
    """
    sty, src = pair_frames(stylised, source)
    return float(np.mean([ssim(_edge_map(src[t]), _edge_map(sty[t])) for t in range(len(src))]))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    if den < 1e-12:  # a constant field: equal fields correlate fully, otherwise not at all
        return 1.0 if np.allclose(a, b, atol=1e-3) else 0.0
    return float(np.clip(float(a @ b) / den, -1.0, 1.0))


def flow_correlation(stylised, source, source_flow=None, method: str = "dis") -> float:
    """Motion kept (higher is better, range [-1, 1]).

    Pearson correlation between the forward flows (t -> t+1, both components, every pixel and
    frame pair, flattened) of the source and of the output, each computed on its own frames.
    Two constant flow fields (no variance) give 1 when equal within 1e-3 px, else 0.
    """
    sty, src = pair_frames(stylised, source, min_frames=2)
    f_src = source_flow if source_flow is not None else video_flow(src, method=method)
    return _pearson(f_src, video_flow(sty, method=method))




# ---------------------------------------------------------------- registry


@dataclass
class EvalInputs:
    """What a registered metric receives: aligned frames and what the caller gave."""

    stylised: np.ndarray
    source: np.ndarray
    prompt: str | None = None
    folders: dict[str, str] = field(default_factory=dict)  # need name -> model folder ("clip", "dino", ...)
    styles: list[str] | None = None
    true_index: int | None = None
    device: str | None = None
    memo: dict = field(default_factory=dict)  # shared results (e.g. source flows) between metrics

    def remember(self, key, compute: Callable[[], object]):
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

    def has(self, need: str) -> bool:
        if need == "prompt":
            return bool(self.prompt)
        if need == "styles":
            return bool(self.styles) and self.true_index is not None
        if need == "frames2":
            return len(self.source) >= 2
        return bool(self.folders.get(need))


@dataclass
class Metric:
    """A score: `fn(inputs: EvalInputs) -> float`; `needs` names what it requires: "prompt",
    "styles" (styles and a true style), "frames2" (two or more frames), or a model folder key
    ("clip", "dino", or a new one passed in evaluate(folders=...))."""

    name: str
    direction: str  # "higher" or "lower" is better
    range: tuple[float, float]
    needs: tuple[str, ...]
    fn: Callable[[EvalInputs], float]
    description: str = ""


METRICS: dict[str, Metric] = {}


def register_metric(name: str, direction: str, range: tuple[float, float], needs=(), description: str = "",
                    replace: bool = False):
    """Decorator: registers `fn(inputs: EvalInputs) -> float` as metric `name`."""
    if direction not in ("higher", "lower"):
        raise PickStyleError(f"metric {name}: direction={direction!r}: expected 'higher' or 'lower'")
    if name in METRICS and not replace:
        raise PickStyleError(f"metric {name}: already registered (use replace=True)")
    needs = (needs,) if isinstance(needs, str) else tuple(needs or ())

    def add(fn):
        METRICS[name] = Metric(name, direction, tuple(range), needs, fn, description)
        return fn

    return add


def _source_flows(x: EvalInputs):
    return x.remember("source_flows", lambda: (video_flow(x.source), video_flow(x.source, backward=True)))


@register_metric("warp_error", "lower", (0.0, 1.0), ("frames2",),
                 "stylised t+1 warped onto t with the source flow: mean |diff|/255 over non-occluded pixels")
def _m_warp(x):
    return warp_error(x.stylised, x.source, flows=_source_flows(x))


@register_metric("warp_error_source", "lower", (0.0, 1.0), ("frames2",),
                 "warp_error of the source against itself: the floor warp_error can reach")
def _m_warp_source(x):
    return warp_error(x.source, x.source, flows=_source_flows(x))


@register_metric("flicker", "lower", (0.0, 1.0), ("frames2",),
                 "mean_t (|d_out - d_src| + |l_out - l_src|)/2 of frame changes d and luma changes l (/255)")
def _m_flicker(x):
    return flicker(x.stylised, x.source)


@register_metric("edge_ssim", "higher", (-1.0, 1.0), (),
                 "SSIM of normalised Sobel gradient maps of source and output, mean over frames")
def _m_edge(x):
    return edge_ssim(x.stylised, x.source)


@register_metric("flow_correlation", "higher", (-1.0, 1.0), ("frames2",),
                 "Pearson correlation of the forward optical flows of source and output")
def _m_flowcorr(x):
    return flow_correlation(x.stylised, x.source, source_flow=_source_flows(x)[0])


@register_metric("clip_score", "higher", (0.0, 100.0), ("clip", "prompt"),
                 "mean over frames of 100 * max(cos(CLIP image, CLIP prompt), 0)")
def _m_clip_score(x):
    return clip_score(x.stylised, x.prompt, x.folders["clip"], x.device)


@register_metric("clip_consistency", "higher", (-1.0, 1.0), ("clip",),
                 "mean cos of CLIP image embeddings of consecutive output frames")
def _m_clip_consistency(x):
    return clip_consistency(x.stylised, x.folders["clip"], x.device)


@register_metric("dino_structure", "lower", (0.0, 4.0), ("dino",),
                 "mean squared difference of DINO patch-token cosine self-similarity matrices")
def _m_dino(x):
    return dino_structure(x.stylised, x.source, x.folders["dino"], x.device)


def _r_precision(k: int):
    def fn(x):
        r = x.remember("r_precision", lambda: clip_r_precision(x.stylised, x.styles, x.true_index,
                                                               x.folders["clip"], x.device))
        return r[f"top{k}"]

    return fn


for _k in (1, 2, 3):
    register_metric(f"r_precision_top{_k}", "higher", (0.0, 1.0), ("clip", "styles"),
                    f"1 if the true style is among the {_k} styles CLIP ranks best for the middle frame")(_r_precision(_k))


# ---------------------------------------------------------------- evaluation


def evaluate_frames(stylised, source, prompt=None, clip_dir=None, dino_dir=None, styles=None, true_style=None, *,
                    folders: dict | None = None, metrics: list[str] | None = None, size=None,
                    device: str | None = None, notes: list[str] | None = None) -> dict:
    """`evaluate` on frame arrays (aligned here first)."""
    sty, src, more = align_videos(stylised, source, size)
    notes = list(notes or []) + more
    all_folders = {k: str(v) for k, v in (folders or {}).items() if v}
    if clip_dir:
        all_folders["clip"] = str(clip_dir)
    if dino_dir:
        all_folders["dino"] = str(dino_dir)
    if "clip" in all_folders:
        check_model_folder(all_folders["clip"], "CLIP", CLIP_TYPES)
    if "dino" in all_folders:
        check_model_folder(all_folders["dino"], "DINO", DINO_TYPES)
    true_index = None
    if styles:
        styles = check_styles(styles)
        true_index = resolve_true_style(styles, true_style, prompt)
    inputs = EvalInputs(sty, src, prompt or None, all_folders, styles or None, true_index, device)
    names = list(METRICS) if metrics is None else list(metrics)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise PickStyleError(f"metrics {unknown}: unknown (known: {', '.join(METRICS)})")
    values, directions, skipped = {}, {}, {}
    for name in names:
        metric = METRICS[name]
        missing = [n for n in metric.needs if not inputs.has(n)]
        if missing:
            skipped.setdefault(", ".join(missing), []).append(name)
            continue
        value = float(metric.fn(inputs))
        if not math.isfinite(value):
            notes.append(f"{name}: not defined for these frames (no valid pixels), left out")
            continue
        values[name], directions[name] = value, metric.direction
    labels = {"frames2": "a single frame", "prompt": "no prompt", "styles": "no styles",
              "clip": "no clip_dir", "dino": "no dino_dir"}
    for need, skipped_names in skipped.items():
        why = " and ".join(labels.get(n, f"no {n} folder") for n in need.split(", "))
        notes.append(f"not computed ({why}): {', '.join(skipped_names)}")
    settings = {
        "frames": len(src), "height": int(src.shape[1]), "width": int(src.shape[2]),
        "flow": "OpenCV DIS (preset medium) on grayscale", "edge_map": "Sobel magnitude / 99th percentile",
        "prompt": prompt, "folders": all_folders, "device": resolve_device(device) if all_folders else None,
        "styles": styles or None, "true_style": styles[true_index] if true_index is not None else None,
        "ranges": {k: list(METRICS[k].range) for k in values},
    }
    return {"metrics": values, "directions": directions, "notes": notes, "settings": settings}


def evaluate(source_path, stylised_path, prompt=None, clip_dir=None, dino_dir=None, styles=None, true_style=None, *,
             folders: dict | None = None, metrics: list[str] | None = None, size=None,
             device: str | None = None) -> dict:
    """Every registered metric that can be computed with what is given, for one stylised video.

    No-weight metrics always (the temporal ones need 2+ frames); clip_score with clip_dir and
    prompt; clip_consistency with clip_dir; dino_structure with dino_dir; r_precision_top1/2/3
    with clip_dir and styles (the true style: `true_style`, an index or name, else the style the
    prompt names). `folders`: extra model folders for registered metrics ({need: folder}).
    Models are loaded once per folder. Returns {"metrics": {key: value}, "directions": {key:
    "higher"|"lower"}, "notes": [...], "settings": {...}}.
    """
    src, sty, notes = load_pair(source_path, stylised_path, size)
    result = evaluate_frames(sty, src, prompt, clip_dir, dino_dir, styles, true_style, folders=folders,
                             metrics=metrics, size=size, device=device, notes=notes)
    result["settings"].update(source=str(source_path), stylised=str(stylised_path))
    return result
