"""Outputs kept bit-identical across refactors: `pickstyle stylize` on the demo clip in each toy
style (the bundled settings), and one tiny-model stylise with every option set. The checksums are
SHA-256 of the decoded uint8 frames, recorded before the code was moved; a change of behaviour
updates them on purpose, with a reason in the commit."""

import hashlib

import numpy as np
import pytest
import torch

from pickstyle.cli import main
from pickstyle.toy import DEMO_CLIP, STYLES
from pickstyle.video import read_video, write_video

from .conftest import moving_square_video

TOY_CHECKSUMS = {"sketch": "ae36fea7bd814b16", "sepia": "cbfa0aaa32ae0feb", "blueprint": "ecb5297cc9c85315",
                 "thermal": "c5073ae25a817441", "night vision": "0305bbff22cf1ae6"}  # fmt: skip
EVERY_OPTION_CHECKSUM = "d63d69b74580a269"


def _checksum(path) -> str:
    frames, fps = read_video(path)
    return hashlib.sha256(np.ascontiguousarray(frames).tobytes() + repr((frames.shape, round(fps, 3))).encode()).hexdigest()[:16]


@pytest.mark.parametrize("style", list(STYLES))
def test_the_toy_models_stylize_of_the_demo_clip_is_unchanged(style, tmp_path):
    description = DEMO_CLIP.with_suffix(".txt").read_text().strip()
    out = tmp_path / "out.mp4"
    assert main(["stylize", str(DEMO_CLIP), "-p", f"{style} style. {description}", "-o", str(out), "--quiet"]) == 0
    assert _checksum(out) == TOY_CHECKSUMS[style]


def test_a_tiny_model_stylize_with_every_option_is_unchanged(tiny_model_dir, tmp_path):
    from pickstyle.adapters import add_style_adapter, save_style_adapter
    from pickstyle.testing import build_tiny_components

    transformer = build_tiny_components()["transformer"]
    add_style_adapter(transformer, rank=4, alpha=4)
    g = torch.Generator().manual_seed(0)
    for name, p in transformer.named_parameters():
        if "lora_B" in name:
            p.data = 3 * torch.randn(p.shape, generator=g)
    adapter = save_style_adapter(transformer, tmp_path / "adapter")
    source = tmp_path / "src.mp4"
    write_video(source, moving_square_video(num_frames=14, height=40, width=72), fps=24)
    out = tmp_path / "out.mp4"
    argv = ["stylize", str(source), "-p", "a red square moving", "-o", str(out), "--model", str(tiny_model_dir),
            "--adapter", str(adapter), "--adapter-scale", "0.8", "--style", "pixar", "--steps", "6", "--skip", "2",
            "--lead-in", "4", "--guidance-end", "0.8", "--samples", "2", "--deflicker", "0.3", "--text-scale", "4",
            "--context-scale", "3", "--null-context", "permute", "--negative-prompt", "blurry", "--seed", "5",
            "--size", "48x32", "--frames", "9", "--fps", "12", "--scheduler", "unipc", "--shift", "5", "--dtype", "fp32",
            "--batch-guidance", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert _checksum(out) == EVERY_OPTION_CHECKSUM
