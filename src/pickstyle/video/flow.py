"""Dense optical flow between frames, and warping one frame onto another along it with an
occlusion check: shared by the warping-error metric and the deflicker."""

from __future__ import annotations

import numpy as np

from pickstyle.errors import PickStyleError
from pickstyle.video.align import as_frames, gray


def optical_flow(frame_a, frame_b, method: str = "dis") -> np.ndarray:
    """Dense flow [H, W, 2] (dx, dy in pixels) from frame a to frame b, on grayscale:
    a(x) ~ b(x + flow(x)). `method`: "dis" (OpenCV DIS, preset MEDIUM) or "farneback"."""
    import cv2

    a, b = gray(frame_a), gray(frame_b)
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return dis.calc(a, b, None)
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 4, 15, 3, 5, 1.2, 0)
    raise PickStyleError(f"method={method!r}: expected 'dis' or 'farneback'")


def video_flow(frames, backward: bool = False, method: str = "dis") -> np.ndarray:
    """Flows [T-1, H, W, 2] of consecutive frames: t -> t+1, or t+1 -> t with backward=True."""
    f = as_frames(frames)
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
