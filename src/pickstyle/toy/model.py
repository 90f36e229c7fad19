"""The bundled toy model pickstyle-tiny: where it lies, its loader, and stylising with its settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pickstyle.video.frames import to_uint8

ASSETS = Path(__file__).parent.parent / "assets"
TOY_MODEL = ASSETS / "pickstyle-tiny"  # the toy model's diffusers folder, its adapter and settings
DEMO_CLIP = ASSETS / "demo.mp4"  # a held-out toy scene with moving objects and a panning camera



def load_toy_pipeline(model=TOY_MODEL, adapter: str | None = "default"):
    """The toy model's `PickStylePipeline` (fp32, CPU) with its sampler from the settings, and a
    style adapter: "default" loads the one its pickstyle.json names, None none, else a path.
    Returns (pipe, settings)."""
    import torch

    from pickstyle.pipeline.pipeline import load_pipeline
    from pickstyle.pipeline.schedulers import make_scheduler
    from pickstyle.settings import model_settings, resolve

    settings = model_settings(str(model))
    pipe = load_pipeline(str(model), torch.float32)
    sampler = resolve(settings, "")
    pipe.scheduler = make_scheduler(sampler["scheduler"], sampler["shift"])
    adapter = settings.get("adapter") if adapter == "default" else adapter
    if adapter:
        pipe.load_style_adapter(adapter)
    pipe.set_progress_bar_config(disable=True)
    return pipe, settings


def vae_round_trip(pipe, frames: np.ndarray, lead_in: int = 0) -> np.ndarray:
    """uint8 frames [T, H, W, 3] encoded and decoded by the pipeline's VAE (latent mode): the best
    any model that generates in this latent space can do. `lead_in`: after that many frames played
    before them, as the pipeline's lead-in does (`lead_in_indices`), which are then dropped: the
    same for a model run with that lead-in. Returns uint8 [T, H, W, 3]."""
    import torch

    from pickstyle.video.frames import lead_in_indices

    frames = np.concatenate([frames[lead_in_indices(lead_in)], frames])
    video = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].to(pipe.vae.dtype) / 127.5 - 1
    with torch.no_grad():
        out = pipe.decode_latents(pipe.encode_latents(video))[0]
    return to_uint8(out)[lead_in:]


def toy_stylize(pipe, settings: dict, frames: np.ndarray, prompt: str, seed: int = 2025, **overrides) -> np.ndarray:
    """Stylise uint8 frames [T, H, W, 3] (T = 4k+1, H and W multiples of 16) with a model's settings
    (its pickstyle.json, resolved for `prompt` as `pickstyle stylize` does); `overrides` are
    `PickStylePipeline.__call__` arguments (`num_inference_steps` rescales the settings' skip, as
    `--steps` does). Returns uint8 [T, H, W, 3]."""
    import torch

    from pickstyle.pipeline.lead_in import with_lead_in
    from pickstyle.settings import call_arguments, resolve

    steps = overrides.pop("num_inference_steps", None)
    kwargs = dict(call_arguments(resolve(settings, prompt, {"steps": steps})), **overrides)
    out = with_lead_in(
        pipe, frames, prompt=prompt, height=frames.shape[1], width=frames.shape[2], num_frames=len(frames),
        generator=torch.Generator().manual_seed(seed), **kwargs,
    ).frames[0]  # fmt: skip
    return to_uint8(out)
