"""`pickstyle clips`: a preview video of the synthetic training clips, source beside style."""

from __future__ import annotations

import numpy as np
import torch


def _label(frame: np.ndarray, lines: list[str]) -> np.ndarray:
    """Draw `lines` of text on a dark band at the top of a uint8 [H, W, 3] frame."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    height = 12 * len(lines) + 4
    draw.rectangle([0, 0, image.width, height], fill=(0, 0, 0))
    for i, line in enumerate(lines):
        draw.text((4, 2 + 12 * i), line, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def clip_to_frames(clip: torch.Tensor) -> np.ndarray:
    """[3, T, H, W] in [-1, 1] -> uint8 [T, H, W, 3]."""
    return ((clip.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()


def preview_clips(pairs, count: int, height: int, width: int, num_frames: int, seed: int, motion: bool = True) -> np.ndarray:
    """`count` training clips as the trainer makes them (pairs drawn with `seed`, one sampled
    camera motion shared by source and style), one after another: uint8 [count * T, H, 2 W, 3],
    source on the left, style on the right, the motion and prompt written on top."""
    from pickstyle.train.data import load_image_pair
    from pickstyle.train.motion import motion_pair

    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(pairs), generator=generator)[:count].tolist()
    chosen += [int(i) for i in torch.randint(0, len(pairs), (count - len(chosen),), generator=generator)]
    frames = []
    for n, index in enumerate(chosen):
        pair = pairs[index]
        source, target = (x.unsqueeze(0) for x in load_image_pair(pair, height, width))
        source_clip, target_clip, m = motion_pair(source, target, generator, num_frames, enabled=motion)
        side = np.concatenate([clip_to_frames(source_clip[0]), clip_to_frames(target_clip[0])], axis=2)
        params = {
            "static": "",
            "rotate": f" to {m.angle:.1f} deg",
            "zoom_in": f" x{m.zoom:.2f}",
            "zoom_out": f" x{m.zoom:.2f}",
        }.get(m.kind, f" zoom {m.zoom:.2f}, {m.shift} px")
        lines = [f"{n + 1}/{count} {pair.source.name} | {m.kind}{params}", pair.prompt[: max(20, width // 3)]]
        frames.extend(_label(f, lines) for f in side)
    return np.stack(frames)
