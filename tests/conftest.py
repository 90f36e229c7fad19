"""Shared fixtures: a tiny random Wan2.1-VACE stack, built offline in code."""

from pathlib import Path

import numpy as np
import pytest

from pickstyle.testing import build_tiny_components, save_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A diffusers folder of the tiny random Wan2.1-VACE model."""
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-wan-vace")


@pytest.fixture(scope="session")
def tiny_model_dir_bf16(tmp_path_factory):
    """The same tiny model saved with every weight in bf16."""
    import torch

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-wan-vace-bf16", dtype=torch.bfloat16)


@pytest.fixture
def private_model_dir(tiny_model_dir, tmp_path):
    """A copy of the tiny model folder for one test, which may write its pickstyle.json."""
    import shutil

    return Path(shutil.copytree(tiny_model_dir, tmp_path / "private-model"))


@pytest.fixture
def pipeline_calls(monkeypatch):
    """The keyword arguments of every stylise the CLI or the toy model runs (`with_lead_in`, the
    pipeline's call and the lead-in), with the sampler in use as `sampler` = (class name, flow
    shift); the calls run as usual."""
    import pickstyle.pipeline.lead_in as lead_in

    calls, call = [], lead_in.with_lead_in

    def recording(pipe, video, **kwargs):
        config = pipe.scheduler.config
        calls.append(dict(kwargs, sampler=(type(pipe.scheduler).__name__, config.get("flow_shift") or config.get("shift"))))
        return call(pipe, video, **kwargs)

    monkeypatch.setattr(lead_in, "with_lead_in", recording)
    return calls


@pytest.fixture
def tiny_components():
    """Fresh components of the tiny model (identical weights every time)."""
    return build_tiny_components()


def random_adapter_transformer(scale: float, seed: int = 0):
    """The tiny model's transformer with a rank-4 style adapter whose B = scale * N(0, 1) (seeded)."""
    import torch

    from pickstyle.pipeline.adapters import add_style_adapter

    transformer = build_tiny_components()["transformer"]
    add_style_adapter(transformer, rank=4, alpha=4)
    g = torch.Generator().manual_seed(seed)
    for name, p in transformer.named_parameters():
        if "lora_B" in name:
            p.data = scale * torch.randn(p.shape, generator=g)
    return transformer


def moving_square_video(num_frames=9, height=32, width=32, seed=0):
    """uint8 [T, H, W, 3]: a coloured square moving right over a noisy background."""
    rng = np.random.default_rng(seed)
    video = (rng.random((num_frames, height, width, 3)) * 60).astype(np.uint8)
    size = max(4, height // 4)
    for t in range(num_frames):
        x = (t * 3) % max(1, width - size)
        video[t, height // 3 : height // 3 + size, x : x + size] = (230, 60, 40)
    return video
