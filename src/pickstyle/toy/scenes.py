"""Toy styles and scenes: styles computable exactly for any frame, so every stylised video has a
ground truth, and procedural scenes to draw training pairs and test clips from.

`STYLES` maps a style name to a deterministic function of one uint8 RGB frame [H, W, 3]
returning one of the same shape. The prompt for a style is `f"{name} style. <description>"`.
"""

from __future__ import annotations

import numpy as np

from pickstyle.video.frames import to_uint8


def _levels(x: np.ndarray) -> np.ndarray:
    """Grey levels (floats in [0, 255]) as uint8."""
    return to_uint8(x, peak=255)


def luma(frame: np.ndarray) -> np.ndarray:
    """Rec. 601 luma, float32 [H, W] in [0, 255]."""
    return frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def _edges(frame: np.ndarray) -> np.ndarray:
    """Gradient magnitude of the lightly blurred luma, scaled to [0, 1] (saturating at 96 grey levels)."""
    import cv2

    gray = _blur(luma(frame), 1.0)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    return np.clip(np.hypot(gx, gy) / 96.0, 0, 1)


def sketch(frame: np.ndarray) -> np.ndarray:
    """Pencil sketch on cream paper: colour dodge of the luma by its blurred inverse."""
    gray = luma(frame)
    dodge = gray * 255.0 / np.maximum(255.0 - _blur(255.0 - gray, 4.0), 1.0)
    shade = np.clip(dodge, 0, 255)[..., None] / 255.0
    return _levels(shade * np.array([250, 244, 228], np.float32))


def sepia(frame: np.ndarray) -> np.ndarray:
    """Sepia toning (the classic matrix) with lifted blacks."""
    m = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)
    return _levels(frame.astype(np.float32) @ m.T * 0.85 + 30)


def blueprint(frame: np.ndarray) -> np.ndarray:
    """Light lines (the picture's edges) on blueprint blue."""
    edges = _edges(frame)[..., None]
    paper = np.array([22, 58, 140], np.float32)
    ink = np.array([225, 235, 255], np.float32)
    return _levels(paper * (1 - edges) + ink * edges)


def thermal(frame: np.ndarray) -> np.ndarray:
    """A thermal camera: luma mapped through the inferno colour map (dark purple to yellow)."""
    import cv2

    gray = _levels(_blur(luma(frame), 1.5))
    return cv2.cvtColor(cv2.applyColorMap(gray, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def night_vision(frame: np.ndarray) -> np.ndarray:
    """Night vision: amplified green monochrome with a fixed scan-line pattern and a vignette."""
    h, w = frame.shape[:2]
    gain = np.clip(luma(frame) * 1.4 + 10, 0, 255) / 255.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2
    vignette = np.clip(1.15 - 0.45 * r2, 0.2, 1.0)
    lines = 0.9 + 0.1 * (np.arange(h) % 2)[:, None]
    shade = (gain * vignette * lines)[..., None]
    return _levels(shade * np.array([70, 255, 90], np.float32))


STYLES = {
    "sketch": sketch,
    "sepia": sepia,
    "blueprint": blueprint,
    "thermal": thermal,
    "night vision": night_vision,
}


# ------------------------------------------------------------------------------ procedural scenes

COLOURS = {
    "red": (220, 40, 40),
    "orange": (240, 140, 30),
    "yellow": (240, 220, 50),
    "green": (50, 170, 60),
    "blue": (40, 90, 220),
    "purple": (140, 60, 180),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
}
SHAPES = ("circle", "square", "triangle", "ring")
BACKGROUNDS = ("sky", "stripes", "checkerboard", "gradient", "noise")


def _background(kind: str, rng: np.random.Generator, h: int, w: int, offset: float = 0.0) -> np.ndarray:
    """float32 [H, W, 3]; `offset` pans patterned backgrounds to the left by that many pixels."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx = xx + offset
    a, b = (np.array(COLOURS[c], np.float32) for c in rng.choice(list(COLOURS), 2, replace=False))
    period = float(rng.integers(8, 24))
    if kind == "sky":
        t = (yy / h)[..., None]
        return np.array([90, 150, 230], np.float32) * (1 - t) + np.array([200, 225, 250], np.float32) * t
    if kind == "stripes":
        return np.where((((xx + yy * 0.5) // period) % 2)[..., None] > 0, a, b)
    if kind == "checkerboard":
        return np.where((((xx // period) + (yy // period)) % 2)[..., None] > 0, a, b)
    if kind == "gradient":
        t = ((xx - offset) / w)[..., None]
        return a * (1 - t) + b * t
    noise = _blur(rng.random((h, w), dtype=np.float32) * 255, period / 4)
    noise = (noise - noise.min()) / max(float(np.ptp(noise)), 1e-6)
    noise = np.roll(noise, -int(round(offset)), axis=1)
    return a * noise[..., None] + b * (1 - noise[..., None])


def _draw(img: np.ndarray, shape: str, colour, cx: float, cy: float, r: float) -> None:
    """Draw a filled shape of radius `r` pixels at (cx, cy) into img [H, W, 3] in place."""
    import cv2

    c = tuple(float(v) for v in colour)
    centre = (int(round(cx * 16)), int(round(cy * 16)))
    radius = max(1, int(round(r * 16)))
    if shape == "circle":
        cv2.circle(img, centre, radius, c, -1, cv2.LINE_AA, shift=4)
    elif shape == "ring":
        cv2.circle(img, centre, radius, c, max(2, int(r / 3)) * 16 // 16, cv2.LINE_AA, shift=4)
    elif shape == "square":
        cv2.rectangle(img, (int(cx - r), int(cy - r)), (int(cx + r), int(cy + r)), c, -1, cv2.LINE_AA)
    else:
        pts = np.array([[cx, cy - r], [cx - r, cy + r * 0.8], [cx + r, cy + r * 0.8]]) * 16
        cv2.fillPoly(img, [pts.astype(np.int32)], c, cv2.LINE_AA, shift=4)


def make_scene_clip(
    rng: np.random.Generator, num_frames: int = 1, height: int = 96, width: int = 96, motion: bool = True
) -> tuple[np.ndarray, str]:
    """A procedural scene, uint8 [T, H, W, 3], and its description: a background and 2 to 4
    shapes; with `motion` and T > 1 the shapes move on straight paths and the camera pans."""
    kind = str(rng.choice(BACKGROUNDS))
    count = int(rng.integers(2, 5))
    objects = []
    for _ in range(count):
        colour = str(rng.choice(list(COLOURS)))
        shape = str(rng.choice(SHAPES))
        r = float(rng.uniform(0.08, 0.2)) * min(height, width)
        x, y = rng.uniform(r, width - r), rng.uniform(r, height - r)
        vx, vy = rng.uniform(-1, 1, 2) * min(height, width) * 0.02 * motion
        article = "an" if colour[0] in "aeiou" else "a"
        objects.append((shape, COLOURS[colour], x, y, r, vx, vy, f"{article} {colour} {shape}"))
    pan = float(rng.uniform(-1.5, 1.5)) * motion
    bg_rng_state = rng.bit_generator.state
    frames = []
    for t in range(num_frames):
        rng.bit_generator.state = bg_rng_state  # the same background every frame, panned
        img = _background(kind, rng, height, width, offset=pan * t)
        for shape, colour, x, y, r, vx, vy, _ in objects:
            _draw(img, shape, colour, x + vx * t, y + vy * t, r)
        frames.append(_levels(img))
    names = [o[-1] for o in objects]
    place = {"sky": "under a blue sky", "stripes": "on a striped wall", "checkerboard": "on a checkerboard",
             "gradient": "on a smooth gradient", "noise": "on a mottled texture"}[kind]  # fmt: skip
    verb = "moving " if motion and num_frames > 1 else ""
    description = f"{', '.join(names[:-1])} and {names[-1]} {verb}{place}"
    return np.stack(frames), description
