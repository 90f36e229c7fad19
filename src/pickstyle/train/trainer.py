"""Training a context-style adapter: rectified flow on paired still images made into clips.

One micro-step, on one process (batch 1):

    pair   -> source and style image, the same camera motion on both -> two clips [1, 3, T, H, W]
    x0     = VAE(style clip)                  context = VACE input of the source clip (96 ch)
    i      ~ U{0..999};  sigma = shifted grid[i];  t = 1000 sigma
    x_t    = (1 - sigma) x0 + sigma eps;      target = eps - x0
    loss   = w(t) * MSE(f(x_t, t; caption, context), target)

Only the LoRA of the VACE self-attention learns; everything else is frozen. Every random draw of
micro-step k on rank r comes from a generator seeded by (seed, rank, k) and the data order from
(seed, epoch), so a resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pickstyle.errors import PickStyleError
from pickstyle.train.config import TrainConfig

LOGGER = logging.getLogger("pickstyle.train")
ADAPTER_NAME = "pickstyle"
CHECKPOINTS = "checkpoints"
NUM_TRAIN_TIMESTEPS = 1000


# ---------------------------------------------------------------------------------- the objective


def flow_grid(shift: float = 5.0, num_steps: int = NUM_TRAIN_TIMESTEPS) -> tuple[torch.Tensor, torch.Tensor]:
    """The training grid: sigmas [num_steps] = shift s / (1 + (shift - 1) s) for
    s = linspace(1, 0, num_steps + 1)[:-1], and timesteps = 1000 sigmas."""
    s = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)[:-1]
    sigmas = shift * s / (1 + (shift - 1) * s)
    return sigmas.float(), (sigmas * NUM_TRAIN_TIMESTEPS).float()


def loss_weights(timesteps: torch.Tensor) -> torch.Tensor:
    """w(t) = exp(-2 ((t - 500) / 1000)^2), minus its minimum over the grid, then mean 1 over the grid."""
    w = torch.exp(-2 * ((timesteps.double() - 500) / 1000) ** 2)
    w = w - w.min()
    return (w / w.mean()).float()


def flow_matching_loss(transformer, x0, context, text, sigma, timestep, weight, noise) -> torch.Tensor:
    """w(t) * MSE between the transformer's velocity and eps - x0 at x_t = (1 - sigma) x0 + sigma eps.

    x0, noise: [B, 16, T', H', W'] float32; context: [B, 96, T', H', W']; text: [B, L, D];
    sigma, timestep, weight: scalars (tensors), one for the batch, or [B], one per clip (the mean
    of the clips' weighted MSEs).
    """
    from pickstyle.pipeline.pipeline import compute_dtype

    dtype = compute_dtype(transformer)
    sigma = sigma.reshape(-1, *[1] * (x0.dim() - 1))
    x_t = (1 - sigma) * x0 + sigma * noise
    pred = transformer(
        hidden_states=x_t.to(dtype),
        timestep=timestep.reshape(-1).expand(x0.shape[0]).to(x0.device),
        encoder_hidden_states=text.to(dtype),
        control_hidden_states=context.to(dtype),
        return_dict=False,
    )[0]
    per_clip = ((pred.float() - (noise - x0)) ** 2).flatten(1).mean(1)
    return (weight * per_clip).mean()


# ---------------------------------------------------------------------------------- determinism


def make_lr_scheduler(optimizer, schedule: str, warmup_steps: int, total_steps: int):
    """diffusers' learning-rate schedule `schedule` (constant, linear or cosine, see
    TrainConfig.lr_schedule) after `warmup_steps` of linear warm-up, over `total_steps` optimiser
    steps; stepped once per optimiser step."""
    from diffusers.optimization import get_scheduler

    name = "constant_with_warmup" if schedule == "constant" and warmup_steps else schedule
    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)


def step_generator(seed: int, rank: int, micro_step: int) -> torch.Generator:
    """The CPU generator of every random draw of one micro-step on one process."""
    state = np.random.SeedSequence([seed, rank, micro_step]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def sample_index(micro_step: int, rank: int, world: int, num_pairs: int, seed: int) -> tuple[int, int]:
    """(pair index, epoch) of micro-step k on `rank`: each epoch is a permutation of the pairs
    seeded by (seed, epoch), dealt round-robin to the processes (wrapped to equal shares)."""
    per_rank = math.ceil(num_pairs / world)
    epoch, position = divmod(micro_step, per_rank)
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
    order = torch.randperm(num_pairs, generator=g)
    order = torch.cat([order] * math.ceil(per_rank * world / num_pairs))[: per_rank * world]
    return int(order[rank::world][position]), epoch


# ---------------------------------------------------------------------------------- checkpoints


def _checkpoint_dirs(output: Path) -> list[Path]:
    folder = output / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step_*") if p.is_dir() and (p / "state.json").is_file())


def save_checkpoint(
    output: Path, step: int, transformer, optimizer, lr_scheduler, config: TrainConfig, keep: int, state_dict=None
) -> Path:
    """Adapter, optimizer, LR schedule, RNG states and position, written to a temporary folder and
    renamed into place; keeps the newest `keep` checkpoints (0: all). `state_dict`: the gathered
    transformer state (FSDP)."""
    import random

    from safetensors.torch import save_file

    from pickstyle.pipeline.adapters import adapter_state_dict

    final = output / CHECKPOINTS / f"step_{step:07d}"
    tmp = output / CHECKPOINTS / f".tmp-step_{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(adapter_state_dict(transformer, ADAPTER_NAME, state_dict), str(tmp / "adapter.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(lr_scheduler.state_dict(), tmp / "lr_scheduler.pt")
    rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, tmp / "rng.pt")
    state = {"step": step, "micro_step": step * config.grad_accum, "config": json.loads(json.dumps(config.__dict__))}
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    if keep > 0:
        for old in _checkpoint_dirs(output)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(folder: Path, transformer, optimizer, lr_scheduler, config: TrainConfig) -> int:
    """Restore a checkpoint in place; returns its step. Refuses one made with another adapter shape."""
    import random

    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = json.loads((folder / "state.json").read_text())
    for key in ("rank", "alpha", "targets", "grad_accum", "seed"):
        saved = state["config"].get(key)
        if saved != getattr(config, key):
            raise PickStyleError(f"{folder}: resume: it was trained with {key}={saved!r}, this run has {getattr(config, key)!r}")
    set_peft_model_state_dict(transformer, load_file(str(folder / "adapter.safetensors")), adapter_name=ADAPTER_NAME)
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True))
    lr_scheduler.load_state_dict(torch.load(folder / "lr_scheduler.pt", weights_only=True))
    rng = torch.load(folder / "rng.pt", weights_only=False)
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return int(state["step"])


# ---------------------------------------------------------------------------------- the run


def _text_embeddings(pipe, prompts: list[str], max_sequence_length: int, device, batch_size: int = 32):
    """Each prompt's umT5 embedding, trailing padding trimmed, on the CPU: {prompt: [L, D]}.
    Encoded `batch_size` prompts at a time (each is padded to max_sequence_length on its own, so
    batching does not change the result)."""
    out = {}
    with torch.no_grad():
        for first in range(0, len(prompts), batch_size):
            batch = prompts[first : first + batch_size]
            embs = pipe.encode_prompt(
                batch, do_classifier_free_guidance=False, max_sequence_length=max_sequence_length, device=device
            )[0]
            for prompt, emb in zip(batch, embs):
                length = int((emb.abs().sum(-1) > 0).nonzero().max()) + 1 if emb.abs().sum() > 0 else 1
                out[prompt] = emb[:length].cpu()
    return out


def encode_clips(pipe, source_clip: torch.Tensor, target_clip: torch.Tensor, cache: dict):
    """(context, x0): the VACE context of `source_clip` under a mask of ones, as
    `pipe.prepare_context` gives it, and the latents of `target_clip`, as `pipe.encode_latents`
    does; clips [1, 3, T, H, W] in [-1, 1]. Both clips go through the VAE in one batch, and the
    parts that do not depend on the clip (the latent of a black clip, the folded mask) are
    computed once per shape and kept in `cache`."""
    key = tuple(source_clip.shape)
    if key not in cache:
        ones = torch.ones_like(source_clip)
        cache[key] = (pipe.encode_latents(torch.zeros_like(source_clip)), pipe.prepare_masks(ones, [[]]).float())
    empty, mask = cache[key]
    reactive, x0 = pipe.encode_latents(torch.cat([source_clip, target_clip])).chunk(2)
    return torch.cat([empty, reactive, mask], dim=1), x0


def _padded(emb: torch.Tensor, length: int, device, dtype) -> torch.Tensor:
    """[L, D] -> [1, length, D], zero-padded as Wan's text encoding is."""
    out = torch.zeros(1, length, emb.shape[-1], device=device, dtype=dtype)
    out[0, : emb.shape[0]] = emb.to(device=device, dtype=dtype)
    return out


def _log_setup(output: Path, main: bool) -> None:
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False
    for handler in list(LOGGER.handlers):
        LOGGER.removeHandler(handler)
    if main:
        handler = logging.FileHandler(output / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        LOGGER.addHandler(handler)


@dataclass
class TrainResult:
    adapter: Path  # the final adapter folder (diffusers LoRA format + pickstyle_train.yaml)
    steps: int  # optimiser steps done in all
    losses: list[tuple[int, float]]  # (step, mean loss over the processes) at each log line
    transformer: torch.nn.Module  # the trained transformer, adapter attached
    is_main: bool = True  # False on the other processes of a distributed run


def train(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train a style adapter as `config` says (see `TrainConfig`); the adapter is saved in
    diffusers' LoRA format with the resolved config beside it."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from pickstyle.pipeline.adapters import (
        add_style_adapter,
        init_style_adapter,
        save_style_adapter,
    )
    from pickstyle.pipeline.pipeline import WAN_NEGATIVE_PROMPT, load_pipeline
    from pickstyle.train.data import load_image_pair, scan_datasets
    from pickstyle.train.motion import motion_pair

    config.check()
    output = Path(config.output)
    if config.tensorboard:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise PickStyleError("tensorboard: true needs the tensorboard package (pip install tensorboard)") from None
    accelerator = Accelerator(
        gradient_accumulation_steps=config.grad_accum,
        cpu=config.cpu,
        log_with="tensorboard" if config.tensorboard else None,
        project_dir=str(output),
    )
    main, rank, world = accelerator.is_main_process, accelerator.process_index, accelerator.num_processes
    device = accelerator.device
    if accelerator.distributed_type.value == "FSDP" and (config.resume or config.validate_every):
        raise PickStyleError("resume and validation videos are not supported under FSDP yet: use DDP, or turn them off")

    # 1. Data: every pair found and checked before anything heavy loads.
    report = scan_datasets(config.data)
    report.raise_if_problems()
    pairs = report.pairs
    checkpoints = _checkpoint_dirs(output)
    if not config.resume and checkpoints:
        raise PickStyleError(f"{output}: has checkpoints already; pass --resume to continue or choose another --output")
    if config.resume and not checkpoints:
        raise PickStyleError(f"{output}: resume: no checkpoint in {output / CHECKPOINTS}")
    if main:
        output.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    _log_setup(output, main)
    LOGGER.info(report.summary().replace("\n", " | "))
    LOGGER.info("processes: %d (%s), device: %s", world, accelerator.distributed_type.value, device)

    # 2. Model: text embeddings once, then the text encoder is freed.
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[config.dtype]
    pipe = load_pipeline(config.model, dtype)
    pipe.set_progress_bar_config(disable=True)
    pipe.text_encoder.to(device)
    prompts = sorted({p.prompt for p in pairs} | {config.validation_prompt, WAN_NEGATIVE_PROMPT} - {""})
    embeddings = _text_embeddings(pipe, prompts, config.max_sequence_length, device)
    pipe.text_encoder = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    pipe.vae.to(device).requires_grad_(False)
    transformer = pipe.transformer.to(device)
    transformer.requires_grad_(False)
    torch.manual_seed(config.seed)  # the adapter's initial A (kaiming uniform) comes from the global generator
    add_style_adapter(transformer, rank=config.rank, alpha=config.alpha, targets=config.targets, adapter_name=ADAPTER_NAME)
    if config.init_adapter and not config.resume:  # a resumed run's checkpoint holds where it was
        layers = init_style_adapter(transformer, config.init_adapter, ADAPTER_NAME)
        LOGGER.info("adapter started from %s (%d layers)", config.init_adapter, layers)
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=config.lr, betas=(config.beta1, config.beta2), weight_decay=config.weight_decay
    )
    total = config.max_steps
    if config.epochs:
        total = min(total, math.ceil(config.epochs * math.ceil(len(pairs) / world) / config.grad_accum))
    # Not prepared by accelerate (which would step it once per process): it counts optimiser steps.
    lr_scheduler = make_lr_scheduler(optimizer, config.lr_schedule, config.warmup_steps, total)
    model, optimizer = accelerator.prepare(transformer, optimizer)

    start = 0
    if config.resume:
        start = load_checkpoint(checkpoints[-1], transformer, optimizer, lr_scheduler, config)
        LOGGER.info("resumed from %s at step %d", checkpoints[-1], start)
    if config.tensorboard:
        accelerator.init_trackers("pickstyle")

    sigmas, timesteps = flow_grid(config.shift)
    weights = loss_weights(timesteps)
    text_length = config.max_sequence_length
    bar = tqdm(total=total, initial=start, disable=not (main and progress), desc="training", unit="step")
    started, losses, logged = time.perf_counter(), [], []
    clip_cache = {}

    # 3. The loop: grad_accum micro-steps of one clip per process make one optimiser step.
    for step in range(start, total):
        for micro in range(config.grad_accum):
            k = step * config.grad_accum + micro
            index, _ = sample_index(k, rank, world, len(pairs), config.seed)
            g = step_generator(config.seed, rank, k)
            source, target = (x.unsqueeze(0).to(device) for x in load_image_pair(pairs[index], config.height, config.width))
            source_clip, target_clip, _ = motion_pair(source, target, g, config.frames, enabled=config.motion)
            i = int(torch.randint(0, NUM_TRAIN_TIMESTEPS, (1,), generator=g))
            with torch.no_grad():
                context, x0 = encode_clips(pipe, source_clip, target_clip, clip_cache)
            noise = torch.randn(x0.shape, generator=g).to(device)
            text = _padded(embeddings[pairs[index].prompt], text_length, device, dtype)
            with accelerator.accumulate(model):
                loss = flow_matching_loss(
                    model, x0, context, text, sigmas[i].to(device), timesteps[i], weights[i].to(device), noise
                )
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.grad_clip > 0:
                    accelerator.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
                if accelerator.sync_gradients:
                    lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach().float().item())

        done = step + 1
        bar.update(1)
        if done % config.log_every == 0 or done == total:
            mean_loss = accelerator.reduce(torch.tensor(np.mean(losses), device=device), reduction="mean").item()
            seconds = (time.perf_counter() - started) / (done - start)
            logged.append((done, mean_loss))
            bar.set_postfix(loss=f"{mean_loss:.4f}", s_per_step=f"{seconds:.2f}")
            LOGGER.info("step %d/%d loss %.5f lr %.2e %.2f s/step", done, total, mean_loss, lr_scheduler.get_last_lr()[0], seconds)
            if config.tensorboard:
                accelerator.log({"loss": mean_loss, "lr": lr_scheduler.get_last_lr()[0]}, step=done)
            losses = []
        if config.checkpoint_every and done % config.checkpoint_every == 0 and done < total:
            state = accelerator.get_state_dict(model)  # every process: gathers the shards under FSDP
            if main:
                save_checkpoint(output, done, transformer, optimizer, lr_scheduler, config, config.keep_checkpoints, state)
            accelerator.wait_for_everyone()
        if config.validate_every and done % config.validate_every == 0:
            if main:
                _validation_video(pipe, transformer, config, embeddings, output / "validation" / f"step_{done:07d}.mp4")
            accelerator.wait_for_everyone()
    bar.close()

    # 4. The adapter, in diffusers' LoRA format, with the settings beside it.
    adapter_dir = output / "adapter"
    state = accelerator.get_state_dict(model)
    if main:
        save_checkpoint(output, total, transformer, optimizer, lr_scheduler, config, config.keep_checkpoints, state)
        save_style_adapter(transformer, adapter_dir, adapter_name=ADAPTER_NAME, state_dict=state)
        (adapter_dir / "pickstyle_train.yaml").write_text(config.to_yaml())
        LOGGER.info("wrote %s", adapter_dir)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(adapter_dir, total, logged, transformer, main)


def _validation_video(pipe, transformer, config: TrainConfig, embeddings, path: Path) -> None:
    """Stylise the configured clip with the adapter as it is now; write it to `path`."""
    from pickstyle.pipeline.pipeline import WAN_NEGATIVE_PROMPT, compute_dtype
    from pickstyle.pipeline.schedulers import make_scheduler
    from pickstyle.video.io import read_video, write_video

    frames, _ = read_video(config.validation_video, num_frames=config.frames)
    pipe.scheduler = make_scheduler("dpm++", 16.0)
    transformer.eval()
    device = next(transformer.parameters()).device
    dtype = compute_dtype(transformer)
    result = pipe(
        video=frames,
        prompt_embeds=_padded(embeddings[config.validation_prompt], config.max_sequence_length, device, dtype),
        negative_prompt_embeds=_padded(embeddings[WAN_NEGATIVE_PROMPT], config.max_sequence_length, device, dtype),
        height=config.height,
        width=config.width,
        num_inference_steps=config.validation_steps,
        skip_steps=config.validation_skip,
        generator=torch.Generator().manual_seed(config.seed),
    )
    transformer.train()
    write_video(path, result.frames[0], fps=16)
    LOGGER.info("validation video %s", path)
