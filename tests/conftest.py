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
    """The keyword arguments of every `PickStylePipeline.__call__`, with the sampler in use as
    `sampler` = (class name, flow shift); the calls run as usual."""
    from pickstyle.pipeline.pipeline import PickStylePipeline

    calls, call = [], PickStylePipeline.__call__

    def recording(self, *args, **kwargs):
        config = self.scheduler.config
        calls.append(dict(kwargs, sampler=(type(self.scheduler).__name__, config.get("flow_shift") or config.get("shift"))))
        return call(self, *args, **kwargs)

    monkeypatch.setattr(PickStylePipeline, "__call__", recording)
    return calls


@pytest.fixture
def tiny_components():
    """Fresh components of the tiny model (identical weights every time)."""
    return build_tiny_components()


def moving_square_video(num_frames=9, height=32, width=32, seed=0):
    """uint8 [T, H, W, 3]: a coloured square moving right over a noisy background."""
    rng = np.random.default_rng(seed)
    video = (rng.random((num_frames, height, width, 3)) * 60).astype(np.uint8)
    size = max(4, height // 4)
    for t in range(num_frames):
        x = (t * 3) % max(1, width - size)
        video[t, height // 3 : height // 3 + size, x : x + size] = (230, 60, 40)
    return video
