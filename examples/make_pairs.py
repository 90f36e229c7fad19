"""Writes examples/pairs/: a tiny paired-image dataset in the authors' v2 layout
(<style>/src, <style>/tar, <style>/caption), made here from procedural scenes and two styles
computed in code (sepia and negative), for the worked training example in the README.
Run: python examples/make_pairs.py"""

from pathlib import Path

import numpy as np
from make_clip import make_clip
from PIL import Image

STYLES = {
    "Sepia": lambda x: np.clip(x.astype(np.float32).mean(-1, keepdims=True) * [1.07, 0.87, 0.62], 0, 255),
    "Negative": lambda x: 255 - x.astype(np.float32),
}
DESCRIPTIONS = ["a red ball over a green field", "a red ball bouncing near a house",
                "a ball in the air under a blue sky", "a red ball landing on striped grass"]


def main(root: Path = Path(__file__).with_name("pairs")) -> None:
    scenes = make_clip(num_frames=33, height=96, width=128)[::8][:4]
    for style, fn in STYLES.items():
        for sub in ("src", "tar", "caption"):
            (root / style / sub).mkdir(parents=True, exist_ok=True)
        for i, (scene, text) in enumerate(zip(scenes, DESCRIPTIONS)):
            Image.fromarray(scene).save(root / style / "src" / f"{i:03d}.png")
            Image.fromarray(fn(scene).astype(np.uint8)).save(root / style / "tar" / f"{i:03d}.png")
            (root / style / "caption" / f"{i:03d}.txt").write_text(f"{style.lower()} style. {text}\n")
    print(f"wrote {root}")


if __name__ == "__main__":
    main()
