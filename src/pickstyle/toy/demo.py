"""`pickstyle demo`: the bundled clip rendered in every toy style by the bundled toy model, written
as one labelled side-by-side video (source, then each style). No download, no GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LABEL_HEIGHT = 18  # pixels of the caption strip above each panel, at the output scale


def label_panel(frames: np.ndarray, label: str, scale: int) -> np.ndarray:
    """Frames uint8 [T, H, W, 3] upscaled `scale` times (nearest) under a black strip with `label`:
    uint8 [T, LABEL_HEIGHT + H scale, W scale, 3]."""
    import cv2

    big = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    strip = np.zeros((LABEL_HEIGHT, big.shape[2], 3), np.uint8)
    cv2.putText(strip, label, (4, LABEL_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([np.broadcast_to(strip, (len(big), *strip.shape)), big], axis=1)


def stylize_windows(pipe, settings: dict, frames: np.ndarray, prompt: str, seed: int) -> np.ndarray:
    """Stylise a clip longer than the model's clip length in consecutive windows of that length
    (settings["frames"]; the last window is taken from the end, overlapping the one before):
    uint8 [T, H, W, 3]."""
    from pickstyle.toy.model import toy_stylize

    size = min(settings.get("frames", len(frames)), len(frames))
    size -= (size - 1) % 4
    out = np.empty_like(frames)
    starts = list(range(0, len(frames) - size + 1, size))
    if starts[-1] + size < len(frames):
        starts.append(len(frames) - size)
    for start in starts:
        out[start : start + size] = toy_stylize(pipe, settings, frames[start : start + size], prompt, seed)
    return out


def run_demo(output, styles=None, seed: int = 2025, progress: bool = True) -> Path:
    """Stylise the bundled demo clip into each toy style (default all) and write the side-by-side
    video to `output` (atomically). Returns its path."""
    from tqdm.auto import tqdm

    from pickstyle.errors import PickStyleError
    from pickstyle.settings import style_prompt
    from pickstyle.toy.model import DEMO_CLIP, TOY_MODEL, load_toy_pipeline
    from pickstyle.toy.scenes import STYLES
    from pickstyle.video.io import read_video, write_video

    styles = list(STYLES) if styles is None else styles
    for style in styles:
        if style not in STYLES:
            raise PickStyleError(f"style {style!r}: the toy model knows {', '.join(STYLES)}")
    if not (TOY_MODEL / "model_index.json").is_file() or not DEMO_CLIP.is_file():
        raise PickStyleError(f"the bundled toy model or demo clip is missing under {TOY_MODEL.parent}")
    frames, fps = read_video(DEMO_CLIP)
    description = DEMO_CLIP.with_suffix(".txt").read_text().strip()
    pipe, settings = load_toy_pipeline()
    panels = [label_panel(frames, "source", 3)]
    for style in tqdm(styles, desc="demo", unit="style", disable=not progress):
        out = stylize_windows(pipe, settings, frames, style_prompt(style, description), seed)
        panels.append(label_panel(out, style, 3))
    return write_video(output, np.concatenate(panels, axis=2), fps=fps)
