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

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import PickStyleError
from .errors import one_line as _one_line

# ---------------------------------------------------------------- frames


def _as_frames(frames, what: str = "frames") -> np.ndarray:
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
    if np.issubdtype(a.dtype, np.floating):
        return np.clip(np.rint(np.nan_to_num(a, nan=0.0) * 255.0), 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
        return np.clip(a, 0, 255).astype(np.uint8)
    raise PickStyleError(f"{what}: unsupported dtype {a.dtype}")


def _pair(stylised, source, min_frames: int = 1) -> tuple[np.ndarray, np.ndarray]:
    sty, src = _as_frames(stylised, "stylised"), _as_frames(source, "source")
    if sty.shape != src.shape:
        raise PickStyleError(f"stylised {_shape_text(sty)} and source {_shape_text(src)} differ: "
                             "call align_videos first")
    if len(src) < min_frames:
        raise PickStyleError(f"source: {len(src)} frame(s); this metric needs at least {min_frames}")
    return sty, src


def _shape_text(a: np.ndarray) -> str:
    return f"{a.shape[0]} frames of {a.shape[2]}x{a.shape[1]}"


def _gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def _luma(frames: np.ndarray) -> np.ndarray:
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
    sty, src = _as_frames(stylised, "stylised"), _as_frames(source, "source")
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
    from .video import read_video

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


# ---------------------------------------------------------------- optical flow


def optical_flow(frame_a, frame_b, method: str = "dis") -> np.ndarray:
    """Dense flow [H, W, 2] (dx, dy in pixels) from frame a to frame b, on grayscale:
    a(x) ~ b(x + flow(x)). `method`: "dis" (OpenCV DIS, preset MEDIUM) or "farneback"."""
    import cv2

    a, b = _gray(frame_a), _gray(frame_b)
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return dis.calc(a, b, None)
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 4, 15, 3, 5, 1.2, 0)
    raise PickStyleError(f"method={method!r}: expected 'dis' or 'farneback'")


def video_flow(frames, backward: bool = False, method: str = "dis") -> np.ndarray:
    """Flows [T-1, H, W, 2] of consecutive frames: t -> t+1, or t+1 -> t with backward=True."""
    f = _as_frames(frames)
    pairs = [(f[t + 1], f[t]) if backward else (f[t], f[t + 1]) for t in range(len(f) - 1)]
    if not pairs:
        return np.zeros((0, *f.shape[1:3], 2), np.float32)
    return np.stack([optical_flow(a, b, method) for a, b in pairs])


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))


def flow_warp(image: np.ndarray, flow: np.ndarray, flow_back: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample `image` [H, W, C] at x + flow(x) (cv2.remap, bilinear): float32 [H, W, C], and where
    that is trustworthy, bool [H, W]: x + flow(x) lies in the frame and the flow comes back,
    |flow(x) + flow_back(x + flow(x))|^2 < 0.01 (|flow(x)|^2 + |flow_back(x + flow(x))|^2) + 0.5
    (not occluded). `flow` [H, W, 2] from this frame to the image's, `flow_back` the other way."""
    import cv2

    h, w = flow.shape[:2]
    gx, gy = _grid(h, w)
    mx, my = gx + flow[..., 0], gy + flow[..., 1]
    warped = cv2.remap(image.astype(np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    back = cv2.remap(flow_back, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    cycle = np.sum((flow + back) ** 2, axis=-1)
    bound = 0.01 * (np.sum(flow**2, axis=-1) + np.sum(back**2, axis=-1)) + 0.5
    return warped, inside & (cycle < bound)


def warp_error(stylised, source, flows=None, method: str = "dis") -> float:
    """Temporal warping error (lower is better, range [0, 1]).

    With f = flow(src_t -> src_t+1) and b = flow(src_t+1 -> src_t), both computed on the SOURCE:
    W_t(x) = sty_t+1(x + f(x)) (cv2.remap, bilinear); a pixel is valid where x + f(x) lies in the
    frame and |f(x) + b(x+f(x))|^2 < 0.01 (|f(x)|^2 + |b(x+f(x))|^2) + 0.5 (not occluded).
    error_t = mean over valid pixels and channels of |sty_t - W_t| / 255; warp_error = mean_t error_t
    (pairs with no valid pixel are skipped; NaN when none has one). `flows`: (forward, backward) as
    from video_flow, to reuse them.
    """
    sty, src = _pair(stylised, source, min_frames=2)
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
    sty, src = _pair(stylised, source, min_frames=2)

    def changes(v):
        d = np.array([np.abs(v[t + 1].astype(np.int16) - v[t]).mean() for t in range(len(v) - 1)]) / 255.0
        m = _luma(v).mean(axis=(1, 2))
        return d, np.abs(np.diff(m)) / 255.0

    d_out, l_out = changes(sty)
    d_src, l_src = changes(src)
    return float(np.mean((np.abs(d_out - d_src) + np.abs(l_out - l_src)) / 2.0))


def _edge_map(frame: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of the grayscale frame, divided by its 99th percentile, clipped to [0, 1]."""
    import cv2

    g = _gray(frame).astype(np.float32) / 255.0
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
    sty, src = _pair(stylised, source)
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
    sty, src = _pair(stylised, source, min_frames=2)
    f_src = source_flow if source_flow is not None else video_flow(src, method=method)
    return _pearson(f_src, video_flow(sty, method=method))


# ---------------------------------------------------------------- model folders (CLIP, DINO)

CLIP_TYPES = ("clip",)
DINO_TYPES = ("dinov2", "dinov2_with_registers", "dinov3_vit", "dino", "vit")
_MODELS: dict[tuple, object] = {}


@dataclass
class ModelBundle:
    """A loaded model with its preprocessing, kept per folder in a small cache."""

    kind: str
    folder: Path
    model: object
    image_processor: object
    tokenizer: object | None = None
    device: str = "cpu"


def clear_model_cache() -> None:
    """Forgets every loaded model."""
    _MODELS.clear()


def _device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def check_model_folder(folder, kind: str, model_types: tuple[str, ...]) -> Path:
    """The folder, if it is a transformers folder whose config.json has one of `model_types`."""
    if folder is None or str(folder) == "":
        raise PickStyleError(f"{kind} folder: none given")
    p = Path(folder)
    if not p.exists():
        raise PickStyleError(f"{p}: no such {kind} folder")
    if not p.is_dir():
        raise PickStyleError(f"{p}: not a folder (expected a local {kind} model folder in transformers format)")
    config = p / "config.json"
    if not config.is_file():
        raise PickStyleError(f"{p}: no config.json (expected a local {kind} model folder in transformers format)")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as err:
        raise PickStyleError(f"{config}: unreadable ({_one_line(err)})") from None
    if model_type not in model_types:
        raise PickStyleError(f"{p}: model_type {model_type!r} is not a {kind} model "
                             f"(expected {' or '.join(map(repr, model_types))})")
    return p


def cached_model(kind: str, folder, loader: Callable[[Path, str], object], device: str | None = None):
    """`loader(folder, device)` once per (kind, folder, device); later calls reuse the result.
    For metrics added with register_metric that load their own checkpoints."""
    dev = _device(device)
    key = (kind, str(Path(folder).resolve()), dev)
    if key not in _MODELS:
        _MODELS[key] = loader(Path(folder), dev)
    return _MODELS[key]


def _load_failed(folder: Path, kind: str, err: BaseException) -> PickStyleError:
    return PickStyleError(f"{folder}: cannot load the {kind} model ({_one_line(err)})")


def _load_bundle(kind: str, folder_arg, types, model_class: str, with_tokenizer: bool, device) -> ModelBundle:
    """A transformers model (class `model_class`), its image processor and optionally its
    tokenizer from a local folder of the expected `types`, cached per folder and device."""
    label = kind.upper()
    folder = check_model_folder(folder_arg, label, types)

    def load(path: Path, dev: str) -> ModelBundle:
        import transformers

        try:
            model = getattr(transformers, model_class).from_pretrained(path, local_files_only=True).to(dev).eval()
            processor = transformers.AutoImageProcessor.from_pretrained(path, local_files_only=True)
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True) if with_tokenizer else None
        except Exception as err:  # noqa: BLE001 - missing files, bad weights: transformers raises many kinds
            raise _load_failed(path, label, err) from None
        return ModelBundle(kind, path, model, processor, tokenizer, dev)

    return cached_model(kind, folder, load, device)


def load_clip(clip_dir, device: str | None = None) -> ModelBundle:
    """CLIPModel, its tokenizer and image processor from a local folder (cached per folder)."""
    return _load_bundle("clip", clip_dir, CLIP_TYPES, "CLIPModel", True, device)


def load_dino(dino_dir, device: str | None = None) -> ModelBundle:
    """A DINO / DINOv2 (or ViT) model and its image processor from a local folder (cached)."""
    return _load_bundle("dino", dino_dir, DINO_TYPES, "AutoModel", False, device)


def _pixels(bundle: ModelBundle, frames: np.ndarray):
    return bundle.image_processor(images=list(frames), return_tensors="pt")["pixel_values"].to(bundle.device)


def _features(out):
    """A tensor from a tensor or a model output (its pooler_output / first item)."""
    if hasattr(out, "pooler_output") and out.pooler_output is not None:
        return out.pooler_output
    return out if hasattr(out, "ndim") else out[0]


def clip_image_embeddings(frames, bundle: ModelBundle, batch: int = 16):
    """L2-normalised CLIP image embeddings [T, D] (float32, CPU)."""
    import torch

    f = _as_frames(frames)
    chunks = []
    with torch.no_grad():
        for i in range(0, len(f), batch):
            pooled = _features(bundle.model.vision_model(pixel_values=_pixels(bundle, f[i : i + batch])))
            chunks.append(bundle.model.visual_projection(pooled).float().cpu())
    return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)


def clip_text_embeddings(texts: list[str], bundle: ModelBundle):
    """L2-normalised CLIP text embeddings [N, D] (float32, CPU); texts truncated to the model's length."""
    import torch

    tok = bundle.tokenizer
    limit = int(getattr(bundle.model.config.text_config, "max_position_embeddings", 77))
    max_len = min(limit, int(tok.model_max_length)) if tok.model_max_length else limit
    enc = tok(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    with torch.no_grad():
        out = bundle.model.text_model(input_ids=enc["input_ids"].to(bundle.device),
                                      attention_mask=enc["attention_mask"].to(bundle.device))
        emb = bundle.model.text_projection(_features(out)).float().cpu()
    return torch.nn.functional.normalize(emb, dim=-1)


def clip_score(frames, prompt: str, clip_dir, device: str | None = None) -> float:
    """Text alignment (higher is better, range [0, 100]):
    mean_t 100 * max(cos(CLIP_image(frame_t), CLIP_text(prompt)), 0)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise PickStyleError(f"prompt={prompt!r}: expected a non-empty text")
    bundle = load_clip(clip_dir, device)
    img = clip_image_embeddings(frames, bundle)
    txt = clip_text_embeddings([prompt], bundle)
    return float((100.0 * (img @ txt[0]).clamp(min=0)).mean())


def clip_consistency(frames, clip_dir, device: str | None = None) -> float:
    """Frame consistency (higher is better, range [-1, 1]):
    mean_t cos(CLIP_image(frame_t), CLIP_image(frame_t+1)); 1.0 for a single frame."""
    img = clip_image_embeddings(frames, load_clip(clip_dir, device))
    if len(img) < 2:
        return 1.0
    return float((img[:-1] * img[1:]).sum(-1).mean())


def style_text(style: str) -> str:
    """The text ranked for a style name: the name itself if it says 'style', else '<name> style'."""
    return style if "style" in style.lower() else f"{style} style"


def clip_r_precision(frame, styles: list[str], true_index: int, clip_dir, device: str | None = None) -> dict:
    """Zero-shot style recognition of one frame (a video: its middle frame T // 2).

    The style texts (style_text(s)) are ranked by CLIP cosine similarity to the frame; top-k is
    1.0 when styles[true_index] is among the k best, else 0.0. Returns {"top1", "top2", "top3"};
    average over videos for R-precision. Higher is better, range [0, 1].
    """
    styles = _check_styles(styles)
    if isinstance(true_index, bool) or not isinstance(true_index, (int, np.integer)) or not 0 <= true_index < len(styles):
        raise PickStyleError(f"true_index={true_index!r}: expected an index into the {len(styles)} styles")
    f = _as_frames(frame, "frame")
    bundle = load_clip(clip_dir, device)
    img = clip_image_embeddings(f[len(f) // 2 : len(f) // 2 + 1], bundle)[0]
    sims = (clip_text_embeddings([style_text(s) for s in styles], bundle) @ img).numpy()
    order = np.argsort(-sims, kind="stable")
    rank = int(np.nonzero(order == true_index)[0][0])
    return {f"top{k}": float(rank < k) for k in (1, 2, 3)}


def _check_styles(styles) -> list[str]:
    if isinstance(styles, str) or not isinstance(styles, (list, tuple)) or not styles:
        raise PickStyleError(f"styles={styles!r}: expected a non-empty list of style names")
    if not all(isinstance(s, str) and s.strip() for s in styles):
        raise PickStyleError(f"styles={styles!r}: every style must be a non-empty text")
    return [s.strip() for s in styles]


def resolve_true_style(styles: list[str], true_style=None, prompt: str | None = None) -> int:
    """The index of the true style: `true_style` as an index or a name (case-insensitive), else
    the style named in `prompt` (whole words, case-insensitive; the longest name found, then the
    earliest in the prompt)."""
    styles = _check_styles(styles)
    lowered = [s.lower() for s in styles]
    if true_style is not None:
        if isinstance(true_style, (int, np.integer)) and not isinstance(true_style, bool):
            if 0 <= true_style < len(styles):
                return int(true_style)
            raise PickStyleError(f"true_style={true_style!r}: index out of range for {len(styles)} styles")
        if isinstance(true_style, str) and true_style.strip().lower() in lowered:
            return lowered.index(true_style.strip().lower())
        raise PickStyleError(f"true_style={true_style!r}: not one of the styles {styles}")
    if not prompt:
        raise PickStyleError("true style: give true_style or a prompt that names one of the styles")
    found = []
    for i, s in enumerate(lowered):
        m = re.search(r"(?<!\w)" + re.escape(s) + r"(?!\w)", prompt.lower())
        if m:
            found.append((-len(s), m.start(), i))
    if not found:
        raise PickStyleError(f"prompt {prompt!r}: names none of the styles {styles} (give the true style)")
    return min(found)[2]


def dino_patch_tokens(frames, bundle: ModelBundle, batch: int = 8):
    """Patch tokens [T, N, D] of the last hidden state (CLS and register tokens dropped: the last
    N = (H/p)(W/p) tokens are the patches), float32 on the model's device."""
    import torch

    f = _as_frames(frames)
    patch = getattr(bundle.model.config, "patch_size", 14)
    patch = patch[0] if isinstance(patch, (list, tuple)) else int(patch)
    chunks = []
    with torch.no_grad():
        for i in range(0, len(f), batch):
            px = _pixels(bundle, f[i : i + batch])
            n = (px.shape[-2] // patch) * (px.shape[-1] // patch)
            hidden = bundle.model(pixel_values=px).last_hidden_state
            chunks.append(hidden[:, -n:].float())
    return torch.cat(chunks)


def dino_structure(stylised, source, dino_dir, device: str | None = None) -> float:
    """Structure distance (lower is better, range [0, 4]; symmetric, 0 for identical frames).

    For frame t and patch tokens z_i of the DINO last hidden state: S_ij = cos(z_i, z_j) ([N, N]);
    distance_t = mean_ij (S_src_ij - S_out_ij)^2; dino_structure = mean_t distance_t.
    """
    import torch

    sty, src = _pair(stylised, source)
    bundle = load_dino(dino_dir, device)

    def selfsim(frames):
        z = torch.nn.functional.normalize(dino_patch_tokens(frames, bundle), dim=-1)
        return z @ z.transpose(1, 2)

    return float(((selfsim(src) - selfsim(sty)) ** 2).mean(dim=(1, 2)).mean().cpu())


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
        styles = _check_styles(styles)
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
        "prompt": prompt, "folders": all_folders, "device": _device(device) if all_folders else None,
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
