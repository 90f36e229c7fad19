"""CLIP and DINO from local transformers folders (never downloaded), loaded once per folder and
device, and the scores computed with them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pickstyle.errors import PickStyleError
from pickstyle.errors import one_line as _one_line
from pickstyle.video.align import as_frames, pair_frames

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


def resolve_device(device: str | None) -> str:
    """`device`, or cuda when there is one, else cpu."""
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
    dev = resolve_device(device)
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

    f = as_frames(frames)
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
    styles = check_styles(styles)
    if isinstance(true_index, bool) or not isinstance(true_index, (int, np.integer)) or not 0 <= true_index < len(styles):
        raise PickStyleError(f"true_index={true_index!r}: expected an index into the {len(styles)} styles")
    f = as_frames(frame, "frame")
    bundle = load_clip(clip_dir, device)
    img = clip_image_embeddings(f[len(f) // 2 : len(f) // 2 + 1], bundle)[0]
    sims = (clip_text_embeddings([style_text(s) for s in styles], bundle) @ img).numpy()
    order = np.argsort(-sims, kind="stable")
    rank = int(np.nonzero(order == true_index)[0][0])
    return {f"top{k}": float(rank < k) for k in (1, 2, 3)}


def check_styles(styles) -> list[str]:
    """The style names for R-precision as a list; PickStyleError if they are not a non-empty list of names."""
    if isinstance(styles, str) or not isinstance(styles, (list, tuple)) or not styles:
        raise PickStyleError(f"styles={styles!r}: expected a non-empty list of style names")
    if not all(isinstance(s, str) and s.strip() for s in styles):
        raise PickStyleError(f"styles={styles!r}: every style must be a non-empty text")
    return [s.strip() for s in styles]


def resolve_true_style(styles: list[str], true_style=None, prompt: str | None = None) -> int:
    """The index of the true style: `true_style` as an index or a name (case-insensitive), else
    the style named in `prompt` (whole words, case-insensitive; the longest name found, then the
    earliest in the prompt)."""
    styles = check_styles(styles)
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

    f = as_frames(frames)
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

    sty, src = pair_frames(stylised, source)
    bundle = load_dino(dino_dir, device)

    def selfsim(frames):
        z = torch.nn.functional.normalize(dino_patch_tokens(frames, bundle), dim=-1)
        return z @ z.transpose(1, 2)

    return float(((selfsim(src) - selfsim(sty)) ** 2).mean(dim=(1, 2)).mean().cpu())
