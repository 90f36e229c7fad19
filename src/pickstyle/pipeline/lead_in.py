"""The lead-in (not in the paper): the clip is generated after L source frames played backwards
before it, and those L frames are dropped, so that no output frame comes from the first latent
frame, which Wan's causal VAE encodes from one frame alone. Costs L/4 more latent frames."""

from __future__ import annotations

from pickstyle.errors import PickStyleError
from pickstyle.pipeline.ensemble import mean_of_samples
from pickstyle.settings import problem
from pickstyle.video.frames import (
    auto_num_frames,
    lead_in_indices,
    sample_frame_indices,
)


def _take(video, index):
    """Frames `index` of a list, array or tensor of frames, in the same container."""
    if isinstance(video, (list, tuple)):
        return [video[i] for i in index]
    return video[list(index)]


def _join(head, video):
    if isinstance(video, (list, tuple)):
        return [*head, *video]
    import numpy as np

    if isinstance(video, np.ndarray):
        return np.concatenate([head, video])
    import torch

    return torch.cat([head, video])


def with_lead_in(pipe, video, lead_in_frames: int = 0, num_frames: int | None = None, **kwargs):
    """`mean_of_samples(pipe, video=..., **kwargs)` (the pipeline's call; `num_samples` videos
    averaged) with a lead-in of `lead_in_frames` (L, a multiple of 4, less than the clip's
    frames): the `num_frames` frames picked over `video` (as the pipeline picks them), source
    frames L..1 of them put before frame 0, the whole generated, and the first L output frames
    dropped (latents, `output_type="latent"`, keep them: [S, 16, T' + L/4, H', W']). Without a
    lead-in, `mean_of_samples` as it is."""
    if isinstance(lead_in_frames, bool) or not isinstance(lead_in_frames, int):
        raise PickStyleError(f"lead_in_frames {lead_in_frames!r}: must be an integer")
    if problem("lead_in", lead_in_frames):
        raise PickStyleError(f"lead_in_frames {lead_in_frames}: {problem('lead_in', lead_in_frames)}")
    if not lead_in_frames:
        return mean_of_samples(pipe, video=video, num_frames=num_frames, **kwargs)
    if video is None or len(video) == 0:
        raise PickStyleError("`video` is empty: pass the source frames")
    num_frames = num_frames or auto_num_frames(len(video), temporal_stride=pipe.vae_scale_factor_temporal)
    if problem("frames", num_frames):
        raise PickStyleError(f"num_frames {num_frames}: {problem('frames', num_frames)}")
    if lead_in_frames >= num_frames:
        raise PickStyleError(f"lead_in_frames {lead_in_frames}: must be less than num_frames ({num_frames})")
    if num_frames != len(video):
        video = _take(video, sample_frame_indices(len(video), num_frames))
    padded = _join(_take(video, lead_in_indices(lead_in_frames)), video)
    return_dict = kwargs.pop("return_dict", True)
    out = mean_of_samples(pipe, video=padded, num_frames=num_frames + lead_in_frames, **kwargs)
    if kwargs.get("output_type") != "latent":
        frames = out.frames
        out.frames = [f[lead_in_frames:] for f in frames] if isinstance(frames, list) else frames[:, lead_in_frames:]
    return out if return_dict else (out.frames,)
