"""Toy styles and scenes: styles computable exactly for any frame, so every stylised video has a
ground truth, and procedural scenes to draw training pairs and test clips from.

`STYLES` maps a style name to a deterministic function of one uint8 RGB frame [H, W, 3]
returning one of the same shape. The prompt for a style is `f"{name} style. <description>"`.
"""

from __future__ import annotations

import numpy as np


def _luma(frame: np.ndarray) -> np.ndarray:
    """Rec. 601 luma, float32 [H, W] in [0, 255]."""
    return frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def _edges(frame: np.ndarray) -> np.ndarray:
    """Gradient magnitude of the lightly blurred luma, scaled to [0, 1] (saturating at 96 grey levels)."""
    import cv2

    gray = _blur(_luma(frame), 1.0)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    return np.clip(np.hypot(gx, gy) / 96.0, 0, 1)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def sketch(frame: np.ndarray) -> np.ndarray:
    """Pencil sketch on cream paper: colour dodge of the luma by its blurred inverse."""
    gray = _luma(frame)
    dodge = gray * 255.0 / np.maximum(255.0 - _blur(255.0 - gray, 4.0), 1.0)
    shade = np.clip(dodge, 0, 255)[..., None] / 255.0
    return _to_uint8(shade * np.array([250, 244, 228], np.float32))


def sepia(frame: np.ndarray) -> np.ndarray:
    """Sepia toning (the classic matrix) with lifted blacks."""
    m = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)
    return _to_uint8(frame.astype(np.float32) @ m.T * 0.85 + 30)


def blueprint(frame: np.ndarray) -> np.ndarray:
    """Light lines (the picture's edges) on blueprint blue."""
    edges = _edges(frame)[..., None]
    paper = np.array([22, 58, 140], np.float32)
    ink = np.array([225, 235, 255], np.float32)
    return _to_uint8(paper * (1 - edges) + ink * edges)


def thermal(frame: np.ndarray) -> np.ndarray:
    """A thermal camera: luma mapped through the inferno colour map (dark purple to yellow)."""
    import cv2

    gray = _to_uint8(_blur(_luma(frame), 1.5))
    return cv2.cvtColor(cv2.applyColorMap(gray, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def night_vision(frame: np.ndarray) -> np.ndarray:
    """Night vision: amplified green monochrome with a fixed scan-line pattern and a vignette."""
    h, w = frame.shape[:2]
    gain = np.clip(_luma(frame) * 1.4 + 10, 0, 255) / 255.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2
    vignette = np.clip(1.15 - 0.45 * r2, 0.2, 1.0)
    lines = 0.9 + 0.1 * (np.arange(h) % 2)[:, None]
    shade = (gain * vignette * lines)[..., None]
    return _to_uint8(shade * np.array([70, 255, 90], np.float32))


STYLES = {
    "sketch": sketch,
    "sepia": sepia,
    "blueprint": blueprint,
    "thermal": thermal,
    "night vision": night_vision,
}


def style_prompt(style: str, description: str) -> str:
    """The prompt of a toy style, `"<style> style. <description>"`."""
    return f"{style} style. {description}"
