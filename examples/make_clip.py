"""Writes examples/clip.mp4: a procedural clip with real motion (a ball crossing a moving
striped background while the camera pans), 33 frames at 256x144, made here so the repository
carries no third-party footage. Run: python examples/make_clip.py"""

from pathlib import Path

import numpy as np

from pickstyle.video.io import write_video


def make_clip(num_frames: int = 33, height: int = 144, width: int = 256) -> np.ndarray:
    """uint8 [T, H, W, 3]."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for t in range(num_frames):
        pan = 3.0 * t
        sky = np.stack([90 + 0.4 * yy, 140 + 0.3 * yy, 220 - 0.2 * yy], axis=-1)
        ground = yy > 0.65 * height
        stripes = ((xx + pan) // 24 % 2).astype(np.float32)
        grass = np.stack([40 + 30 * stripes, 150 + 40 * stripes, 50 + 10 * stripes], axis=-1)
        img = np.where(ground[..., None], grass, sky)
        cx = 30 + 6.0 * t
        cy = 0.65 * height - 18 - 40 * abs(np.sin(t / 5.0))
        ball = (xx - cx) ** 2 + (yy - cy) ** 2 < 15**2
        shade = 1.0 - 0.5 * np.clip(((xx - cx + 5) ** 2 + (yy - cy + 5) ** 2) / 15**2, 0, 1)
        img = np.where(ball[..., None], np.stack([235 * shade, 60 * shade, 40 * shade], axis=-1), img)
        house_x = 170 - pan * 0.5
        house = (xx > house_x) & (xx < house_x + 40) & (yy > 0.65 * height - 35) & ground.__invert__()
        img = np.where(house[..., None], np.array([200.0, 190.0, 160.0]), img)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(frames)


if __name__ == "__main__":
    out = write_video(Path(__file__).with_name("clip.mp4"), make_clip(), fps=16)
    print(f"wrote {out}")
