"""`PickStylePipeline`: Wan2.1-VACE video-to-video style transfer with CS-CFG.

A subclass of diffusers' `WanVACEPipeline`, so loading, saving, device moves, offloading and LoRA
loading keep working. `__call__` adds, on top of VACE's context branch fed by the source video:
noise initialisation from the partially noised source latent (`skip_steps`), and context-style
classifier-free guidance with a spatio-temporally permuted context as the null (`guidance`).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from diffusers import WanVACEPipeline
from diffusers.pipelines.wan.pipeline_output import WanPipelineOutput

from pickstyle.errors import PickStyleError
from pickstyle.pipeline.guidance import (
    GUIDANCE_MODES,
    NULL_CONTEXTS,
    APGState,
    cs_cfg,
    cs_cfg_apg,
    permute_context,
)
from pickstyle.settings import problem
from pickstyle.video.frames import (
    auto_num_frames,
    fit_size,
    frame_size,
    sample_frame_indices,
    to_video_tensor,
)

# Wan2.1's standard negative prompt (its `sample_neg_prompt`): the null text of CS-CFG.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
DEFAULT_AREA = 480 * 832


def compute_dtype(transformer) -> torch.dtype:
    """The dtype a Wan transformer computes in, as diffusers takes it (`ModelMixin.dtype`: the first
    parameter outside `_keep_in_fp32_modules`, or a layerwise-casting hook's compute dtype), through
    a DDP or FSDP wrapper (`.module`). Never the first parameter's: `scale_shift_table` stays fp32."""
    transformer = getattr(transformer, "module", transformer)
    dtype = getattr(transformer, "dtype", None)
    return dtype if isinstance(dtype, torch.dtype) else transformer.patch_embedding.weight.dtype


class PickStylePipeline(WanVACEPipeline):
    """Stylise a video with Wan2.1-VACE, a context-style adapter and CS-CFG.

    >>> pipe = PickStylePipeline.from_pretrained(model_dir, torch_dtype=torch.bfloat16)
    >>> pipe.load_style_adapter("pickstyle_lora.pth")
    >>> out = pipe(video=frames, prompt="anime style. a man boxing", generator=torch.Generator().manual_seed(2025))
    >>> out.frames[0]  # float32 [T, H, W, 3] in [0, 1]
    """

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this (VAE stride x patch size; 16 on Wan)."""
        return self.vae_scale_factor_spatial * self.transformer.config.patch_size[1]

    def load_style_adapter(self, path, scale: float = 1.0, adapter_name: str = "pickstyle", alpha: float | None = None):
        """Load a style adapter: diffusers' LoRA format (file or folder) or the authors' checkpoint
        (`module.vace_blocks.{i}.self_attn.{q,k,v}.lora_{A,B}.consistency.weight`, .pth or
        .safetensors). `scale` multiplies the adapter's effect. Returns the adapter name."""
        from pickstyle.pipeline.adapters import load_style_adapter

        return load_style_adapter(self, path, scale=scale, adapter_name=adapter_name, alpha=alpha)

    def check_style_inputs(
        self, *, video, prompt, prompt_embeds, height, width, num_frames, num_inference_steps, skip_steps,
        num_videos_per_prompt, guidance, guidance_end, null_context, text_guidance_scale, context_guidance_scale,
        apg_momentum, apg_norm_threshold, apg_eta,
    ):  # fmt: skip
        """Raise `PickStyleError` with a one-line message for the first bad argument of `__call__`
        (ranges by the same rules as the settings, `pickstyle.settings.problem`)."""
        if self.transformer is None:
            raise PickStyleError("this pipeline has no `transformer`: PickStyle needs a Wan2.1-VACE transformer")
        if video is None or len(video) == 0:
            raise PickStyleError("`video` is empty: pass the source frames")
        if prompt is None and prompt_embeds is None:
            raise PickStyleError("pass a `prompt` (e.g. 'anime style. a man boxing') or `prompt_embeds`")
        if prompt is not None and not isinstance(prompt, str):
            raise PickStyleError(f"`prompt` must be one string, got {type(prompt).__name__}")
        if guidance not in GUIDANCE_MODES:
            raise PickStyleError(f"guidance {guidance!r}: expected one of {', '.join(GUIDANCE_MODES)}")
        if null_context not in NULL_CONTEXTS:
            raise PickStyleError(f"null_context {null_context!r}: expected one of {', '.join(NULL_CONTEXTS)}")
        whole = {"num_inference_steps": (num_inference_steps, "steps"), "skip_steps": (skip_steps, "skip"),
                 "num_videos_per_prompt": (num_videos_per_prompt, "samples")}  # fmt: skip
        if num_frames is not None:
            whole["num_frames"] = (num_frames, "frames")
        for name, (value, key) in whole.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise PickStyleError(f"{name} {value!r}: must be an integer")
            if problem(key, value):
                raise PickStyleError(f"{name} {value!r}: {problem(key, value)}")
        if skip_steps >= num_inference_steps:
            raise PickStyleError(f"skip_steps {skip_steps}: must be less than num_inference_steps={num_inference_steps}")
        for name, value in [
            ("text_guidance_scale", text_guidance_scale),
            ("context_guidance_scale", context_guidance_scale),
            ("apg_momentum", apg_momentum),
            ("apg_norm_threshold", apg_norm_threshold),
            ("apg_eta", apg_eta),
        ]:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise PickStyleError(f"{name} {value!r}: must be a finite number >= 0")
        if isinstance(guidance_end, bool) or not isinstance(guidance_end, (int, float)) or problem("guidance_end", guidance_end):
            raise PickStyleError(f"guidance_end {guidance_end!r}: must be a fraction of the steps in (0, 1]")
        base = self.size_multiple
        for name, value in [("height", height), ("width", width)]:
            if value is not None and (not isinstance(value, int) or value < base or value % base):
                raise PickStyleError(f"{name} {value!r}: must be a positive multiple of {base}")

    def prepare_context(self, video: torch.Tensor, generator=None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The VACE context of a source video [1, 3, T, H, W] in [-1, 1]:
        [VAE(video (1 - mask)) | VAE(video mask) | mask folded into pixel blocks],
        [1, 2 z + s^2, T', H', W'] (96 channels on Wan). Style transfer uses the default mask of
        ones (regenerate everything); a mask of 0 (keep) and 1 (generate) inpaints."""
        mask = torch.ones_like(video) if mask is None else mask.to(video)
        latents = self.prepare_video_latents(video, mask, [[]], generator, video.device)
        return torch.cat([latents, self.prepare_masks(mask, [[]], generator)], dim=1)

    def encode_latents(self, video: torch.Tensor) -> torch.Tensor:
        """Normalised VAE latents (the mode, no sampling) of a video [B, 3, T, H, W] in [-1, 1]:
        float32 [B, z, (T - 1) / 4 + 1, H / 8, W / 8], as the VACE context encodes it."""
        z = self.vae.encode(video.to(self.vae.dtype)).latent_dist.mode().float()
        z_dim = self.vae.config.z_dim
        mean = torch.tensor(self.vae.config.latents_mean, device=z.device).view(1, z_dim, 1, 1, 1)
        std = torch.tensor(self.vae.config.latents_std, device=z.device).view(1, z_dim, 1, 1, 1)
        return (z - mean) * (1.0 / std)

    def _conditioning_scale(self, conditioning_scale, device, dtype) -> torch.Tensor:
        layers = self.transformer.config.vace_layers
        scale = torch.as_tensor(
            [conditioning_scale] * len(layers) if isinstance(conditioning_scale, (int, float)) else conditioning_scale
        )
        if scale.numel() != len(layers):
            raise PickStyleError(f"conditioning_scale has {scale.numel()} values for {len(layers)} VACE layers")
        return scale.to(device=device, dtype=dtype)

    def _predict(self, latents, t, branches, context_scale, attention_kwargs, batched):
        """Velocity predictions f(x, t; text, context), one per (text, context) in `branches`,
        as separate passes or as one batch; float32, shape of `latents`."""
        x = latents.to(compute_dtype(self.transformer))

        def forward(xs, texts, contexts):
            return self.transformer(
                hidden_states=xs,
                timestep=t.expand(xs.shape[0]),
                encoder_hidden_states=texts,
                control_hidden_states=contexts,
                control_hidden_states_scale=context_scale,
                attention_kwargs=attention_kwargs,
                return_dict=False,
            )[0].float()

        if batched and len(branches) > 1:
            xs = x.repeat(len(branches), *[1] * (x.dim() - 1))
            out = forward(xs, torch.cat([b[0] for b in branches]), torch.cat([b[1] for b in branches]))
            return list(out.chunk(len(branches)))
        return [forward(x, text, context) for text, context in branches]

    @torch.no_grad()
    def __call__(
        self,
        video=None,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        height: int | None = None,
        width: int | None = None,
        area: int = DEFAULT_AREA,
        num_frames: int | None = None,
        num_inference_steps: int = 20,
        skip_steps: int = 4,
        num_videos_per_prompt: int = 1,
        guidance: str = "cs-cfg",
        guidance_end: float = 1.0,
        text_guidance_scale: float = 5.0,
        context_guidance_scale: float = 4.0,
        null_context: str = "permute",
        apg: bool = True,
        apg_momentum: float = 0.75,
        apg_norm_threshold: float = 55.0,
        apg_eta: float = 0.0,
        conditioning_scale: float | list[float] = 1.0,
        batch_guidance: bool = False,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        max_sequence_length: int = 512,
    ):
        r"""Stylise `video` as `prompt` says.

        Args:
            video: the source: a list of PIL images, a uint8 array [T, H, W, 3], or a float tensor
                [T, 3, H, W] / array [T, H, W, 3] in [0, 1].
            prompt: `"<style> style. <description>"`, e.g. `"anime style. a man boxing"`.
            negative_prompt: the null text; default Wan's standard negative prompt.
            height, width: generation size in pixels, multiples of `size_multiple`; default the
                source's aspect ratio at about `area` pixels (default 480 x 832). The source is
                resized to cover it (bicubic) and centre-cropped.
            num_frames: frames to generate (4k+1); default the source's frame count, at most 81,
                rounded down to 4k+1. Frames are picked spread over the whole source.
            num_inference_steps: sampler steps N (default 20).
            skip_steps: k; sampling starts at step k from x = (1 - sigma_k) VAE(source) + sigma_k eps.
                More skip keeps more of the source and stylises less. 0 starts from pure noise.
            num_videos_per_prompt: S videos from S initial noises, denoised as one batch (S times the
                activation memory); every step's permuted null context is the same for all of them,
                and the first noise is the one S = 1 draws (`mean_of_samples` averages them).
            guidance: `"cs-cfg"` (text and context directions), `"cfg"` (plain CFG, the context in
                both branches) or `"none"` (one pass, no guidance).
            guidance_end: guide only the steps before this fraction of the `num_inference_steps`
                schedule (step i of N, counted from 0 including the skipped ones, is guided when
                i < guidance_end * N); the later steps take one pass, the conditional prediction
                (default 1: every step, as the paper).
            text_guidance_scale: w_t, the style (text) direction (default 5).
            context_guidance_scale: w_c, the content (context) direction (default 4); 0 turns it off.
            null_context: `"permute"` (the context latent with its T, H, W axes shuffled, redrawn
                every step from `generator`) or `"zero"` (the context of an all-zero video).
            apg: pass both guidance differences through adaptive projected guidance (default True,
                as the authors run it), with `apg_momentum`, `apg_norm_threshold` (L2 norm cap) and
                `apg_eta` (weight of the part parallel to the conditional prediction). With APG a
                direction's weight is its scale - 1, without it w_c for the context direction; a
                prediction that only a direction of weight 0 needs is not computed (w_t = w_c = 1
                with APG: one pass per step).
            conditioning_scale: weight of the VACE hints (float or one per VACE layer).
            batch_guidance: run the 2 or 3 predictions of a step as one batch (faster on a large
                GPU, more memory) instead of separate passes; the result is the same.
            generator: the source of every random draw (initial noise, then the permutations).
            latents: the initial noise eps [S, 16, T', H', W'] instead of drawing it (T' counts the lead-in).

        Returns:
            `WanPipelineOutput` whose `frames` are float32 [S, T, H, W, 3] in [0, 1] (`output_type="np"`;
            `frames[0]` the first video); with `output_type="latent"`, the S latents [S, 16, T', H', W'].
        """
        if negative_prompt is None and negative_prompt_embeds is None:
            negative_prompt = WAN_NEGATIVE_PROMPT
        self.check_style_inputs(
            video=video, prompt=prompt, prompt_embeds=prompt_embeds, height=height, width=width, num_frames=num_frames,
            num_inference_steps=num_inference_steps, skip_steps=skip_steps,
            num_videos_per_prompt=num_videos_per_prompt, guidance=guidance, guidance_end=guidance_end, null_context=null_context,
            text_guidance_scale=text_guidance_scale, context_guidance_scale=context_guidance_scale,
            apg_momentum=apg_momentum, apg_norm_threshold=apg_norm_threshold, apg_eta=apg_eta,
        )  # fmt: skip
        self._guidance_scale = text_guidance_scale
        self._attention_kwargs = attention_kwargs
        self._interrupt = False
        device = self._execution_device
        dtype = compute_dtype(self.transformer)

        # 1. Source frames: pick num_frames over the clip, resize to cover (height, width), crop.
        frames_available = len(video)
        if num_frames is None:
            num_frames = auto_num_frames(frames_available, temporal_stride=self.vae_scale_factor_temporal)
        if num_frames != frames_available:
            index = sample_frame_indices(frames_available, num_frames)
            video = [video[i] for i in index] if isinstance(video, list) else video[index]
        if height is None or width is None:
            height, width = fit_size(*frame_size(video), area, self.size_multiple)
        source = to_video_tensor(video, height, width).to(device)

        # 2. Text: the prompt and the null text. A pass is run only if its guidance term has a weight:
        # the context term's is w_c - 1 with APG and w_c without; the text term's is w_t - 1.
        use_null_context = guidance == "cs-cfg" and context_guidance_scale not in ((0, 1) if apg else (0,))
        use_null_text = guidance != "none" and (text_guidance_scale != 1 or use_null_context)
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt=prompt,
            negative_prompt=negative_prompt,
            do_classifier_free_guidance=use_null_text,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            max_sequence_length=max_sequence_length,
            device=device,
        )
        prompt_embeds = prompt_embeds.to(dtype)
        if use_null_text:
            negative_prompt_embeds = negative_prompt_embeds.to(dtype)

        # 3. Context: the 96-channel VACE input of the source; the zero-video null if asked for.
        context = self.prepare_context(source, generator)
        source_latents = context[:, self.vae.config.z_dim : 2 * self.vae.config.z_dim].float()
        context = context.to(dtype)
        zero_context = None
        if use_null_context and null_context == "zero":
            zero_context = self.prepare_context(torch.zeros_like(source), generator).to(dtype)
        hint_scale = self._conditioning_scale(conditioning_scale, device, dtype)

        # 4. Timesteps from step k on, S initial noises (drawn before any permutation: the first is the
        # one S = 1 draws) and the initial latents x = (1 - sigma_k) z_source + sigma_k eps, one batch.
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        self.scheduler.set_begin_index(skip_steps)
        timesteps = self.scheduler.timesteps[skip_steps:]
        batch = num_videos_per_prompt
        if latents is not None and tuple(latents.shape) != (batch, *source_latents.shape[1:]):
            raise PickStyleError(
                f"latents of shape {tuple(latents.shape)}: must be {(batch, *source_latents.shape[1:])} "
                f"(num_videos_per_prompt x the VAE latents of {num_frames} frames, a lead-in's included, at {height}x{width})"
            )
        noise = self.prepare_latents(
            batch, self.transformer.config.in_channels, height, width, num_frames, torch.float32, device, generator, latents
        )  # fmt: skip
        if skip_steps > 0:
            sigma = self.scheduler.sigmas[skip_steps].to(device=device, dtype=torch.float32)
            latents = (1 - sigma) * source_latents + sigma * noise
        else:
            latents = noise
        prompt_embeds, context = prompt_embeds.expand(batch, -1, -1), context.expand(batch, -1, -1, -1, -1)
        if use_null_text:
            negative_prompt_embeds = negative_prompt_embeds.expand(batch, -1, -1)
        if zero_context is not None:
            zero_context = zero_context.expand(batch, -1, -1, -1, -1)

        # 5. Denoise with CS-CFG (each step's permuted null context is the same for every sample).
        apg_state = APGState()
        self._num_timesteps = len(timesteps)
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                self._current_timestep = t
                guided = use_null_text and skip_steps + i < guidance_end * num_inference_steps
                branches = [(prompt_embeds, context)]
                if guided:
                    branches.append((negative_prompt_embeds, context))
                if guided and use_null_context:
                    null = permute_context(context, generator) if null_context == "permute" else zero_context
                    branches.append((negative_prompt_embeds, null))
                preds = self._predict(latents, t, branches, hint_scale, attention_kwargs, batch_guidance)

                if not guided:
                    velocity = preds[0]
                elif apg:
                    velocity, apg_state = cs_cfg_apg(
                        *preds, *([None] * (3 - len(preds))), text_guidance_scale, context_guidance_scale,
                        apg_state, apg_momentum, apg_norm_threshold, apg_eta,
                    )  # fmt: skip
                else:
                    velocity = cs_cfg(*preds, *([None] * (3 - len(preds))), text_guidance_scale, context_guidance_scale)

                latents = self.scheduler.step(velocity, t, latents, return_dict=False)[0]

                if callback_on_step_end is not None:
                    callback_kwargs = {k: locals()[k] for k in callback_on_step_end_tensor_inputs}
                    outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    latents = outputs.pop("latents", latents)
                progress_bar.update()
        self._current_timestep = None

        # 6. Decode each video.
        frames = latents if output_type == "latent" else self.decode_videos(latents, output_type)
        self.maybe_free_model_hooks()
        return WanPipelineOutput(frames=frames) if return_dict else (frames,)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, 16, T', H', W'] -> the VAE's videos [B, 3, T, H, W], about [-1, 1]."""
        z_dim = self.vae.config.z_dim
        latents = latents.to(self.vae.dtype)
        mean = torch.tensor(self.vae.config.latents_mean).view(1, z_dim, 1, 1, 1).to(latents.device, latents.dtype)
        std = torch.tensor(self.vae.config.latents_std).view(1, z_dim, 1, 1, 1).to(latents.device, latents.dtype)
        return self.vae.decode(latents * std + mean, return_dict=False)[0]

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, output_type: str = "np"):
        """Normalised latents [B, 16, T', H', W'] -> frames via the VAE (as `WanVACEPipeline` does)."""
        return self.video_processor.postprocess_video(self._decode(latents), output_type=output_type)

    def decode_videos(self, latents: torch.Tensor, output_type: str = "np"):
        """Each of S normalised latents [S, 16, T', H', W'] decoded on its own (the memory of one):
        np float32 [S, T, H, W, 3] in [0, 1] (a list of S lists of PIL images for "pil")."""
        videos = [self.decode_latents(z, output_type) for z in latents.split(1)]
        if len(videos) == 1:
            return videos[0]
        if output_type == "pil":
            return [video[0] for video in videos]
        return np.concatenate(videos) if isinstance(videos[0], np.ndarray) else torch.cat(videos)

    @torch.no_grad()
    def decode_mean(self, latents: torch.Tensor, output_type: str = "np"):
        """The mean of the videos decoded from each of S normalised latents [S, 16, T', H', W'] (one
        at a time: the memory of one), as the frames of one video."""
        video = sum(self._decode(z).float() for z in latents.split(1)) / len(latents)
        return self.video_processor.postprocess_video(video, output_type=output_type)


def load_pipeline(model: str, dtype=torch.bfloat16) -> PickStylePipeline:
    """`PickStylePipeline` from a local diffusers Wan2.1-VACE folder or a hub id; VAE in fp32."""
    path = Path(model)
    if path.exists():
        index = path / "model_index.json"
        if not index.is_file():
            raise PickStyleError(f"{model}: not a diffusers model folder (no model_index.json)")
        try:
            transformer = json.loads(index.read_text()).get("transformer", [None, None])[1]
        except (json.JSONDecodeError, AttributeError, IndexError, TypeError):
            raise PickStyleError(f"{index}: not a valid model_index.json") from None
        if transformer != "WanVACETransformer3DModel":
            raise PickStyleError(
                f"{model}: not a Wan-VACE model (its transformer is {transformer!r}, expected WanVACETransformer3DModel)"
            )
    elif model.count("/") != 1 or model.startswith((".", "/", "~")):
        raise PickStyleError(f"{model}: no such model folder")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # diffusers renames torch_dtype to dtype
            return PickStylePipeline.from_pretrained(model, torch_dtype={"default": dtype, "vae": torch.float32})
    except PickStyleError:
        raise
    except Exception as err:  # hub, file and config errors all end here with their first line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PickStyleError(f"{model}: could not load the model: {first}") from None
