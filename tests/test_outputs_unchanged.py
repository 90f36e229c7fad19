"""Outputs kept bit-identical across refactors: `pickstyle stylize` on the demo clip in each toy
style (the bundled settings), and one tiny-model stylise with every option set. The checksums are
SHA-256 of the uint8 frames the command hands to `write_video` (libx264's bitstream is not
repeatable from one process to the next here, so not the file), recorded before the code was
moved; a change of behaviour updates them on purpose, with a reason in the commit."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from pickstyle.cli import main
from pickstyle.toy.model import DEMO_CLIP
from pickstyle.toy.scenes import STYLES
from pickstyle.video.io import read_video

from .conftest import moving_square_video, random_adapter_transformer

TOY_CHECKSUMS = {"sketch": "f5c7f9db341ce661", "sepia": "113e36684f3ae16e", "blueprint": "1227b2c523b852fa",
                 "thermal": "fe7f3148f402fc14", "night vision": "a217e612548d718a"}  # fmt: skip
EVERY_OPTION_CHECKSUM = "8d98e05735da0b90"


@pytest.fixture
def written(monkeypatch):
    """The checksum of each (frames, fps) the CLI writes, in order; the files are written as usual."""
    import pickstyle.video.io

    checksums, write = [], pickstyle.video.io.write_video

    def recording(path, frames, fps=16.0):
        frames = np.ascontiguousarray(frames)
        checksums.append(hashlib.sha256(frames.tobytes() + repr((frames.shape, fps)).encode()).hexdigest()[:16])
        return write(path, frames, fps=fps)

    monkeypatch.setattr(pickstyle.video.io, "write_video", recording)
    return checksums


@pytest.mark.parametrize("style", list(STYLES))
def test_the_toy_models_stylize_of_the_demo_clip_is_unchanged(style, tmp_path, written):
    description = DEMO_CLIP.with_suffix(".txt").read_text().strip()
    out = tmp_path / "out.mp4"
    assert main(["stylize", str(DEMO_CLIP), "-p", f"{style} style. {description}", "-o", str(out), "--quiet"]) == 0
    assert written == [TOY_CHECKSUMS[style]] and read_video(out)[0].shape == (9, 64, 64, 3)


def test_a_tiny_model_stylize_with_every_option_is_unchanged(tiny_model_dir, tmp_path, written):
    from pickstyle.pipeline.adapters import save_style_adapter

    adapter = save_style_adapter(random_adapter_transformer(3.0), tmp_path / "adapter")
    source = tmp_path / "frames"  # lossless: an mp4 source would differ a little from one encode to the next
    source.mkdir()
    for i, frame in enumerate(moving_square_video(num_frames=14, height=40, width=72)):
        Image.fromarray(frame).save(source / f"{i:03d}.png")
    out = tmp_path / "out.mp4"
    argv = ["stylize", str(source), "-p", "a red square moving", "-o", str(out), "--model", str(tiny_model_dir),
            "--adapter", str(adapter), "--adapter-scale", "0.8", "--style", "pixar", "--steps", "6", "--skip", "2",
            "--lead-in", "4", "--guidance-end", "0.8", "--samples", "2", "--deflicker", "0.3", "--text-scale", "4",
            "--context-scale", "3", "--null-context", "permute", "--negative-prompt", "blurry", "--seed", "5",
            "--size", "48x32", "--frames", "9", "--fps", "12", "--scheduler", "unipc", "--shift", "5", "--dtype", "fp32",
            "--batch-guidance", "--quiet"]  # fmt: skip
    written.clear()
    assert main(argv) == 0
    assert written == [EVERY_OPTION_CHECKSUM] and len(read_video(out)[0]) == 9
