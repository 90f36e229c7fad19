"""The test-time ensemble (not in the paper): the mean of the videos decoded from S initial
noises, denoised as one batch. What the samples share stays; what each invents frame by frame
averages out, so the output flickers less, at about S times the sampling time."""

from __future__ import annotations

from pickstyle.errors import PickStyleError
from pickstyle.settings import problem


def mean_of_samples(pipe, num_samples: int = 1, output_type: str = "np", return_dict: bool = True, **kwargs):
    """`pipe(**kwargs)` with `num_samples` (S) videos per prompt, decoded one at a time and
    averaged before the conversion to `output_type`: one video, `frames[0]` [T, H, W, 3] for "np".
    `output_type="latent"` returns the S latents [S, 16, T', H', W']. S = 1 is the plain call."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or problem("samples", num_samples):
        raise PickStyleError(f"num_samples {num_samples!r}: must be a whole number >= 1")
    if num_samples == 1 or output_type == "latent":
        return pipe(num_videos_per_prompt=num_samples, output_type=output_type, return_dict=return_dict, **kwargs)
    from diffusers.pipelines.wan.pipeline_output import WanPipelineOutput

    latents = pipe(num_videos_per_prompt=num_samples, output_type="latent", **kwargs).frames
    frames = pipe.decode_mean(latents, output_type)
    return WanPipelineOutput(frames=frames) if return_dict else (frames,)
