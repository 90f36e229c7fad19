"""Rebuild the toy model (pickstyle-tiny) from scratch on a CPU, stage by stage, resumably.

    python toy/build.py vae --minutes 60      # the VAE: reconstruction of toy scenes and their styles
    python toy/build.py vae-ceiling           # its PSNR per style on held-out clips -> toy/work/vae/ceiling.json
    python toy/build.py base --minutes 60     # the VACE base on plain clips: copy, generate, inpaint

Every stage checkpoints into toy/work/<stage>/ every few minutes and continues from there when run
again, so a long build can span sessions. Later stages (the VACE base trained with text, then the
PickStyle adapter with `pickstyle train`) build on the VAE; see toy/README.md for the plan.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from pickstyle.settings import STYLE_SETTING_KEYS
from pickstyle.toy.scenes import STYLES, make_scene_clip

WORK = Path(__file__).parent / "work"
SIZE, FRAMES = 64, 9
HELD_OUT_SEED = 10_000_000  # scenes from this seed on are never trained on
WARMUP = 50  # steps of linear learning-rate warm-up when a stage resumes without its AdamW moments
VAE_CONFIG = dict(
    base_dim=16,
    z_dim=16,
    dim_mult=[1, 2, 2],
    num_res_blocks=1,
    temperal_downsample=[False, False],  # 4x in space, 1x in time: 9 x 64 x 64 -> 9 x 16 x 16 x 16
)


def toy_clip(seed: int, style: str | None) -> torch.Tensor:
    """A procedural scene with motion, optionally in a toy style: float [3, T, H, W] in [-1, 1]."""
    frames, _ = make_scene_clip(np.random.default_rng(seed), FRAMES, SIZE, SIZE)
    if style is not None:
        frames = np.stack([STYLES[style](f) for f in frames])
    return _clip_tensor(frames)


def _clip_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 frames [..., T, H, W, 3] -> float [..., 3, T, H, W] in [-1, 1] (on the frames' device)."""
    return torch.as_tensor(frames).movedim(-1, -4).float() / 127.5 - 1


def _gray(frames: np.ndarray) -> np.ndarray:
    """uint8 frames [T, H, W, 3] in grey (Rec. 601 luma in all three channels): the control video
    of VACE's colourisation task."""
    from pickstyle.toy.scenes import luma

    return np.repeat(np.rint(luma(frames))[..., None], 3, -1).astype(np.uint8)


def _batch(step: int, size: int) -> torch.Tensor:
    """Training batch `step`: half the clips plain, half in a random toy style."""
    rng = np.random.default_rng(step)
    names = [None] * len(STYLES) + list(STYLES)
    return torch.stack([toy_clip(int(rng.integers(HELD_OUT_SEED)), names[rng.integers(len(names))]) for _ in range(size)])


def _load_vae(folder: Path):
    from diffusers import AutoencoderKLWan

    if (folder / "vae" / "config.json").is_file():
        return AutoencoderKLWan.from_pretrained(folder / "vae")
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**VAE_CONFIG)
    with torch.no_grad():  # start the output inside (-1, 1): the decode clamps, and clamped pixels get no gradient
        vae.decoder.conv_out.weight.mul_(0.1)
    return vae


def _train_loop(folder: Path, params, save_model, step_loss, minutes: float, lr: float, weight_decay: float,
                log_every: int, checkpoint_minutes: float = 5.0, cooldown: int = 0, decay: bool = False) -> None:  # fmt: skip
    """The loop every stage shares: AdamW on `params` (gradient clip 1.0) for `minutes` of wall
    time, resumed from `folder` (state.json; optimizer.pt too where present: it stays out of git to
    keep the repository small, so a fresh clone resumes with new AdamW moments, the learning rate
    then warming up linearly over WARMUP steps); `step_loss(step)` returns the loss and
    a note for the log; a log line every `log_every` steps; `save_model(folder)` with the
    optimizer every `checkpoint_minutes` and at the end. `cooldown` > 0 starts the stage's last
    phase: the learning rate falls linearly from `lr` to 0 over that many steps from the current
    one (kept in state.json, so a resumed call goes on with it), and the loop ends there. `decay`:
    the same, with the length set so that the rate reaches 0 as `minutes` run out, from the speed
    of this call's steps 10-60 (the length is logged and kept in state.json)."""
    params = list(params)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    state = {"step": 0, "seconds": 0.0}
    if (folder / "state.json").is_file():
        state = json.loads((folder / "state.json").read_text())
    warmup = WARMUP
    if (folder / "optimizer.pt").is_file():
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
        warmup = 0
    if cooldown:
        state["cooldown"] = [state["step"], cooldown]
    if decay:
        state.pop("cooldown", None)
    first, length = state.get("cooldown", [0, 0])

    def save(seconds: float) -> None:
        state["seconds"] += seconds
        save_model(folder)
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")
        (folder / "state.json").write_text(json.dumps(state))

    log = (folder / "train.log").open("a")
    started = last_save = window = time.time()
    losses, done = [], 0
    while time.time() - started < minutes * 60 and not (length and state["step"] >= first + length):
        for group in optimizer.param_groups:
            group["lr"] = lr * (1 - (state["step"] - first) / length if length else 1) * min(1, (done + 1) / (warmup or 1))
        if decay and done == 10:
            timed = time.time()
        if decay and done == 60:
            first, length = state["step"], int((minutes * 60 - (time.time() - started)) / ((time.time() - timed) / 50))
            state["cooldown"] = [first, length]
            log.write(f"decay: the learning rate falls linearly to 0 over steps {first}-{first + length}\n")
        loss, note = step_loss(state["step"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        done += 1
        losses.append(loss.item())
        if state["step"] % log_every == 0:
            seconds = (time.time() - window) / len(losses)
            log.write(f"step {state['step']} loss {np.mean(losses):.4f}{note} lr {optimizer.param_groups[0]['lr']:.2e} {seconds:.2f} s/step\n")
            log.flush()
            losses, window = [], time.time()
        if time.time() - last_save > checkpoint_minutes * 60:
            save(time.time() - last_save)
            last_save = time.time()
    save(time.time() - last_save)


def _reconstruction_loss(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The VAE's loss: L1 + MSE of the round trip `out` against the clips `x` [B, 3, T, H, W]."""
    return (out - x).abs().mean() + ((out - x) ** 2).mean()


def train_vae(minutes: float, batch_size: int = 4, lr: float = 1e-3) -> None:
    """Train the VAE for `minutes` of wall time: L1 + MSE of the decoded posterior mean."""
    folder = WORK / "vae"
    folder.mkdir(parents=True, exist_ok=True)
    vae = _load_vae(folder).train()

    def step_loss(step: int):
        x = _batch(step, batch_size)
        out = vae.decode(vae.encode(x).latent_dist.mode()).sample
        mse = ((out - x) ** 2).mean()
        psnr = 10 * np.log10(4 / max(mse.item(), 1e-10))
        return _reconstruction_loss(out, x), f" batch PSNR {psnr:.1f} dB"

    _train_loop(folder, vae.parameters(), lambda f: vae.save_pretrained(f / "vae"), step_loss, minutes, lr, 0.0, 50)


@torch.no_grad()
def vae_ceiling(clips: int = 12, vae=None, folder: Path = WORK / "vae") -> dict:
    """The round trip of the VAE (toy/work/vae's, or `vae`) on held-out clips, plain and per style:
    reconstruction PSNR (dB), and its warping error over the clip's own (the flicker the VAE adds,
    a floor for every model in its latent space). Writes <folder>/ceiling.json."""
    from pickstyle.eval.metrics import warp_error
    from pickstyle.train.preview import clip_to_frames

    vae = (_load_vae(folder) if vae is None else vae).eval()
    result = {}
    plain = [clip_to_frames(toy_clip(HELD_OUT_SEED + i, None)) for i in range(clips)]  # whose flow the warping uses
    for style in [None, *STYLES]:
        x = torch.stack([toy_clip(HELD_OUT_SEED + i, style) for i in range(clips)])
        out = vae.decode(vae.encode(x).latent_dist.mode()).sample
        mse = ((out - x) ** 2).mean(dim=(1, 2, 3, 4)).clamp_min(1e-10)
        ratios = [warp_error(clip_to_frames(o), source) / warp_error(clip_to_frames(v), source)
                  for o, v, source in zip(out, x, plain)]  # fmt: skip
        result[style or "plain"] = {"psnr": round(float((10 * torch.log10(4 / mse)).mean()), 2),
                                    "warp_vs_clip": round(float(np.mean(ratios)), 2)}  # fmt: skip
    (folder / "ceiling.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


@torch.no_grad()
def widen_decoder(vae, factor: int, seed: int = 0, noise: float = 1e-3):
    """A copy of the Wan VAE `vae` whose decoder has `factor` times the channels in every layer
    (`decoder_base_dim`), computing nearly the same function: each channel is repeated `factor`
    times (an RMS norm over channels keeps its output: the repeats scale the norm and its sqrt(dim)
    alike), each weight reading a widened input splits the old weight among the repeats at random
    proportions that sum to one, and the attention's queries are scaled by 1/sqrt(factor) against
    its larger 1/sqrt(dim). `noise` x each weight's standard deviation, added from a generator
    seeded `seed`, makes the repeats differ so that training can tell them apart. The encoder is
    shared unchanged, so the latent space stays."""
    from diffusers import AutoencoderKLWan

    config = {k: v for k, v in vae.config.items() if not k.startswith("_")}
    width = config.get("decoder_base_dim") or config["base_dim"]
    wide = AutoencoderKLWan(**{**config, "decoder_base_dim": width * factor})
    wide.load_state_dict({k: v for k, v in vae.state_dict().items() if not k.startswith("decoder.")}, strict=False)
    generator = torch.Generator().manual_seed(seed)
    old = dict(vae.decoder.named_parameters())
    for name, param in wide.decoder.named_parameters():
        weight = old[name]
        if name.endswith("to_qkv.weight") or name.endswith("to_qkv.bias"):  # [q; k; v] stacked on dim 0
            weight = weight.unflatten(0, (3, -1)).repeat_interleave(factor, 1).flatten(0, 1)
            weight[: param.shape[0] // 3] /= factor**0.5
        elif param.shape[0] == factor * weight.shape[0]:
            weight = weight.repeat_interleave(factor, 0)
        if weight.dim() > 1 and param.shape[1] == factor * weight.shape[1]:  # split among the repeats of an input
            share = torch.rand(weight.shape[0], weight.shape[1], factor, generator=generator) + 0.5
            share = (share / share.sum(-1, keepdim=True)).flatten(1)
            weight = weight.repeat_interleave(factor, 1) * share.view(*share.shape, *[1] * (weight.dim() - 2))
        if weight.shape != param.shape:
            raise ValueError(f"widen_decoder: cannot widen {name} from {tuple(old[name].shape)} to {tuple(param.shape)}")
        jitter = torch.randn(weight.shape, generator=generator) * noise * weight.float().std() if weight.numel() > 1 else 0
        param.copy_(weight + jitter)
    return wide


def tune_decoder(minutes: float, lr: float = 2e-4, batch_size: int = 4, temporal_weight: float = 1.0,
                 widen: int = 1, decay: bool = False) -> None:  # fmt: skip
    """Fine-tune the decoder of the base's VAE (toy/work/base/model/vae) for `minutes`, with a
    temporal term: L1 + MSE of the round trip, plus `temporal_weight` x the L1 of its frame-to-frame
    changes against the clip's (a round trip whose errors stay put between frames does not
    flicker). The encoder stays frozen, so the latent space, and the base's cache, the base and
    the adapters trained in it, stay valid. `widen` > 1 first widens the decoder that many times
    (`widen_decoder`; its AdamW moments start afresh); `decay`: the learning rate falls linearly to
    0 over `minutes`. State and log in toy/work/decoder."""
    folder = WORK / "decoder"
    folder.mkdir(parents=True, exist_ok=True)
    pipe = _base_pipeline()
    if widen > 1:
        pipe.register_modules(vae=widen_decoder(pipe.vae, widen))
        (folder / "optimizer.pt").unlink(missing_ok=True)
        with (folder / "train.log").open("a") as log:
            log.write(f"widened the decoder {widen} times: decoder_base_dim {pipe.vae.config.decoder_base_dim}\n")
    vae = pipe.vae.requires_grad_(False)
    params = [*vae.post_quant_conv.parameters(), *vae.decoder.parameters()]
    for p in params:
        p.requires_grad_(True)
    vae.decoder.train()

    def step_loss(step: int):
        x = _batch(DECODER_BATCHES + step, batch_size)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mode()
        out = vae.decode(z).sample
        temporal = (out.diff(dim=2) - x.diff(dim=2)).abs().mean()
        return _reconstruction_loss(out, x) + temporal_weight * temporal, f" temporal {temporal.item():.4f}"

    _train_loop(folder, params, lambda f: pipe.save_pretrained(WORK / "base" / "model"), step_loss, minutes, lr, 0.0, 50, decay=decay)
    print(json.dumps(vae_ceiling(4, vae, folder)))


DECODER_BATCHES = 1_000_000  # the decoder's batches (`_batch`) start here: clips the VAE stage never drew


TOY_WORDS = [
    *STYLES, "style", "a", "an", "and", "moving", "under", "blue", "sky", "on", "striped", "wall",
    "checkerboard", "smooth", "gradient", "mottled", "texture", "red", "orange", "yellow", "green",
    "purple", "white", "black", "circle", "square", "triangle", "ring", "night", "vision",
]  # fmt: skip
BASE_CONFIG = dict(
    patch_size=(1, 2, 2), num_attention_heads=6, attention_head_dim=32, in_channels=16, out_channels=16,
    text_dim=64, freq_dim=256, ffn_dim=512, num_layers=6, vace_layers=[0, 2, 4], vace_in_channels=2 * 16 + 16,
)  # fmt: skip
TASKS = {"copy": 0.3, "generate": 0.2, "inpaint": 0.2, "colorize": 0.3}  # task: probability (base steps 3160 on)


def toy_tokenizer():
    """A word-level T5 tokenizer for the toy captions: each word of TOY_WORDS is one piece (log
    probability -1), anything else falls back to single characters (-8), so that every training
    prompt, "night vision style. <description>", fits in 32 tokens (at most 25 measured on 500
    clips). Until base step 2643 the toy used a unigram tokenizer trained in code whose scores
    were dropped: it split words into letters (65 tokens per prompt on average), so the 32-token
    captions lost most of their description."""
    import string

    from transformers import T5Tokenizer

    words = sorted({w for phrase in TOY_WORDS for w in phrase.split()})
    pieces = [("\u2581" + w, -1.0) for w in words] + [("\u2581", -5.0), (",", -2.0), (".", -2.0)]
    pieces += [(c, -8.0) for c in string.ascii_letters + string.digits + string.punctuation if c not in ",."]
    return T5Tokenizer(vocab=[("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), *pieces], extra_ids=0)


def _text_encoder(vocab_size: int):
    """The toy's text encoder: a umT5 of width 64 and 2 layers, random (seed 1) and frozen."""
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(1)
    config = UMT5Config(vocab_size=vocab_size, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1)  # fmt: skip
    return UMT5EncoderModel(config).eval()


def _new_base():
    """A PickStylePipeline of the trained VAE, a fresh transformer, a frozen random umT5 and the
    toy's word-level tokenizer."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanVACETransformer3DModel

    from pickstyle.pipeline.pipeline import PickStylePipeline

    tokenizer = toy_tokenizer()
    torch.manual_seed(2)
    transformer = WanVACETransformer3DModel(**BASE_CONFIG)
    return PickStylePipeline(tokenizer=tokenizer, text_encoder=_text_encoder(len(tokenizer)), vae=_load_vae(WORK / "vae").eval(),
                             scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), transformer=transformer)  # fmt: skip


def _base_clip(seed: int, count: int):
    """The base's training clip `seed` of a cache with `count` plain clips (the styled ones follow,
    the styles in turn): (uint8 frames [T, H, W, 3], caption, the clip's generator, which then
    draws its inpainting rectangle)."""
    from pickstyle.settings import style_prompt

    rng = np.random.default_rng([seed, 1] if seed < count else [seed - count, 5])
    frames, caption = make_scene_clip(rng, FRAMES, SIZE, SIZE)
    if seed >= count:
        style = list(STYLES)[(seed - count) % len(STYLES)]
        frames = np.stack([STYLES[style](f) for f in frames])
        caption = style_prompt(style, caption)
    return frames, caption, rng


def _inpaint_mask(rng: np.random.Generator) -> torch.Tensor:
    """The inpainting split of a base clip, drawn by the clip's generator: a rectangle covering
    1/16 to 1/4 of the frame, float [3, T, H, W], 1 inside."""
    h, w = (int(v) for v in rng.integers(SIZE // 4, SIZE // 2 + 1, 2))
    top, left = (int(v) for v in rng.integers(0, SIZE - h + 1, 2))
    mask = torch.zeros(3, FRAMES, SIZE, SIZE)
    mask[..., top : top + h, left : left + w] = 1
    return mask


class OnlineBaseClips(torch.utils.data.Dataset):
    """The base's training clips made on the fly instead of read from the cache (for a GPU, where
    encoding is cheap and the cache's 4500 clips would be seen hundreds of times): clip n is a
    plain scene (seed sequence [n, 1]), or one in a toy style when n % 3 == 2 (a third, as in the
    cache; seed sequence [n, 5], style n % 5). Item n: (uint8 frames [T, H, W, 3], the same in
    grey, the inpainting mask [3, T, H, W], caption)."""

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, n: int):
        frames, caption, rng = _base_clip(n, 0 if n % 3 == 2 else n + 1)
        return frames, _gray(frames), _inpaint_mask(rng), caption


def _encode_online_batch(pipe, batch, device) -> dict:
    """A batch of OnlineBaseClips encoded on `device` as the cache holds it: {x0, inactive,
    reactive, mask, gray, text} (float32)."""
    frames, grays, masks, captions = batch
    video, gray, mask = _clip_tensor(frames.to(device)), _clip_tensor(grays.to(device)), masks.to(device)
    with torch.no_grad():
        return {
            "x0": pipe.encode_latents(video),
            "inactive": pipe.encode_latents(video * (1 - mask)),
            "reactive": pipe.encode_latents(video * mask),
            "mask": torch.cat([pipe.prepare_masks(m[None], [[]]) for m in mask]),
            "gray": pipe.encode_latents(gray),
            "text": _embed(pipe, list(captions)),
        }


def retext_base(count: int) -> None:
    """Give the base being trained the current toy tokenizer, with a new frozen random umT5 for its
    vocabulary, and re-embed the cached captions with them (the cache holds `count` plain clips):
    how the build moved to the word-level tokenizer at base step 2643. Cross-attention then
    relearns the new embeddings as the base trains on."""
    folder = WORK / "base"
    pipe = _base_pipeline()
    pipe.tokenizer = toy_tokenizer()
    pipe.text_encoder = _text_encoder(len(pipe.tokenizer))
    path = folder / "cache.pt"
    cache = torch.load(path, weights_only=True)
    cache["text"] = torch.cat([_embed(pipe, _base_clip(seed, count)[1]).half() for seed in range(len(cache["x0"]))])
    pipe.save_pretrained(folder / "model")
    tmp = path.with_suffix(".tmp")
    torch.save(cache, tmp)
    tmp.replace(path)
    print(f"re-embedded {len(cache['text'])} captions with a {len(pipe.tokenizer)}-piece tokenizer")


def cache_base_latents(count: int, styled: int = 0, batch: int = 8) -> None:
    """Encode `count` plain training clips, then `styled` clips in the toy styles (in turn, captions
    "<style> style. <description>") once into toy/work/base/cache.pt (git-ignored): the clip latents
    x0, the VACE latents of a random inpainting split (video outside / inside a rectangle covering
    1/16 to 1/4 of the frame) with its folded mask, the latents of the clip in grey (the control
    signal of VACE's colourisation task) and the caption embeddings. Resumable: more clips are
    appended to an existing cache, and a cache from before the grey latents gets them."""
    folder = WORK / "base"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cache.pt"
    cache = torch.load(path, weights_only=True) if path.is_file() else {}
    done = len(cache.get("x0", []))
    pipe = _base_pipeline()
    parts = {k: list(cache.get(k, [])) for k in ("x0", "inactive", "reactive", "mask", "text", "gray")}
    started = time.time()
    for first in range(len(parts["gray"]), count + styled, batch):
        seeds = range(first, min(first + batch, count + styled))
        clips, grays, masks, texts = [], [], [], []
        for seed in seeds:
            frames, description, rng = _base_clip(seed, count)
            clips.append(_clip_tensor(frames))
            grays.append(_clip_tensor(_gray(frames)))
            masks.append(_inpaint_mask(rng))
            texts.append(description)
        video, mask = torch.stack(clips), torch.stack(masks)
        with torch.no_grad():
            parts["gray"] += pipe.encode_latents(torch.stack(grays)).half().unbind(0)
            if first >= done:
                parts["x0"] += pipe.encode_latents(video).half().unbind(0)
                parts["inactive"] += pipe.encode_latents(video * (1 - mask)).half().unbind(0)
                parts["reactive"] += pipe.encode_latents(video * mask).half().unbind(0)
                parts["mask"] += [pipe.prepare_masks(m[None], [[]])[0].half() for m in mask]
                parts["text"] += [_embed(pipe, t)[0].half() for t in texts]
        print(f"cached {first + len(seeds)}/{count + styled} clips, {time.time() - started:.0f} s", flush=True)
    tmp = path.with_suffix(".tmp")
    torch.save({k: torch.stack(v) for k, v in parts.items()}, tmp)
    tmp.replace(path)


def _embed(pipe, text: str | list[str]) -> torch.Tensor:
    """The frozen text encoder's embedding of a caption or a list of N: [1 or N, 32, 64]."""
    with torch.no_grad():
        return pipe.encode_prompt(text, do_classifier_free_guidance=False, max_sequence_length=32)[0]


def base_model() -> Path:
    """toy/work/base/model, the base's fp32 weights (git-ignored). In a fresh clone, where only the
    base's state.json is committed, it is first written from the bundled fp16 copy of the same step
    (upcast to fp32, without the adapter), so every later stage (decoder, base, adapter, tune,
    refine, export) starts from the bundled base."""
    model_dir = WORK / "base" / "model"
    if not (model_dir / "model_index.json").is_file() and (WORK / "base" / "state.json").is_file():
        from pickstyle.pipeline.pipeline import PickStylePipeline
        from pickstyle.toy.model import TOY_MODEL

        print(f"{model_dir} is missing: writing it from the bundled fp16 weights in {TOY_MODEL}", flush=True)
        PickStylePipeline.from_pretrained(TOY_MODEL, torch_dtype=torch.float32).save_pretrained(model_dir)
    return model_dir


def _base_pipeline():
    """The base being trained: `base_model()` when it exists, else a new base."""
    model_dir = base_model()
    if (model_dir / "model_index.json").is_file():
        from pickstyle.pipeline.pipeline import PickStylePipeline

        pipe = PickStylePipeline.from_pretrained(model_dir, torch_dtype=torch.float32)
    else:
        pipe = _new_base()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def base_batch(cache: dict, empty: torch.Tensor, null_text: torch.Tensor, step: int, size: int, in_order: bool = False):
    """Batch `step` of the base's tasks from the cache: (x0, context, text), float32. Each example
    is drawn with its task (TASKS): copy the context, generate from the caption with an empty
    context, inpaint the masked rectangle the caption describes, or colourise the clip in grey as
    the caption says (VACE's colourisation task: for a styled clip the caption's style word picks
    the palette; steps 0-3159 drew copy/generate/inpaint with 0.4/0.3/0.3); its caption is replaced by the
    empty text `null_text` [L, D] with probability 0.1 (as Wan drops text, so that classifier-free
    guidance has an unconditional branch). `empty`: the latent of a black clip [16, T', H', W'].
    `in_order`: the batch is the cache's first `size` clips (an encoded online batch), not a draw."""
    rng = np.random.default_rng([step, 2])
    idx = np.arange(size) if in_order else rng.integers(len(cache["x0"]), size=size)
    tasks = rng.choice(list(TASKS), size=size, p=list(TASKS.values()))
    x0 = cache["x0"][idx].float()
    ones = torch.ones_like(cache["mask"][0]).float()
    contexts = []
    for i, task in zip(idx, tasks):
        if task == "copy":
            contexts.append(torch.cat([empty, cache["x0"][i].float(), ones]))
        elif task == "colorize":
            contexts.append(torch.cat([empty, cache["gray"][i].float(), ones]))
        elif task == "generate":
            contexts.append(torch.cat([empty, empty, ones]))
        else:
            contexts.append(torch.cat([cache["inactive"][i].float(), cache["reactive"][i].float(), cache["mask"][i].float()]))
    text = cache["text"][idx].float()
    text[torch.from_numpy(rng.random(size) < 0.1).to(text.device)] = null_text
    return x0, torch.stack(contexts), text


def train_base(minutes: float, lr: float = 4e-4, batch_size: int = 8, cooldown: int = 0, device: str = "cpu",
               online: bool = False, decay: bool = False, workers: int = 8) -> None:  # fmt: skip
    """Train the VACE base from scratch with the rectified-flow objective of `pickstyle train`
    (shift 3; one timestep per clip; base steps 0-5830 drew one per batch) on the cached clips, or
    with `online` on clips made by `workers` processes and encoded on `device` (OnlineBaseClips;
    clip n of step k is k * batch_size + n). `cooldown`, `decay`: see `_train_loop`."""
    from pickstyle.train.trainer import flow_grid, flow_matching_loss, loss_weights

    folder = WORK / "base"
    torch.set_float32_matmul_precision("high")  # TF32 matrix products on a GPU; no effect on a CPU
    pipe = _base_pipeline().to(device)
    transformer = pipe.transformer.train()
    with torch.no_grad():
        empty = pipe.encode_latents(torch.zeros(1, 3, FRAMES, SIZE, SIZE, device=device))[0]
    null_text = _embed(pipe, "")[0]
    sigmas, timesteps = flow_grid(3.0)
    weights = loss_weights(timesteps)
    if not online:
        cache = {k: v.to(device) for k, v in torch.load(folder / "cache.pt", weights_only=True).items()}
    batches = None  # online: the loader, started at the first step this call trains

    def step_loss(step: int):
        nonlocal batches
        if online:
            if batches is None:
                batches = iter(torch.utils.data.DataLoader(OnlineBaseClips(), batch_size, sampler=range(step * batch_size, len(OnlineBaseClips())),
                                                           num_workers=workers, persistent_workers=workers > 0, prefetch_factor=4 if workers else None))  # fmt: skip
            x0, context, text = base_batch(_encode_online_batch(pipe, next(batches), device), empty, null_text, step, batch_size, in_order=True)
        else:
            x0, context, text = base_batch(cache, empty, null_text, step, batch_size)
        g = torch.Generator().manual_seed(step)
        i = torch.randint(0, 1000, (batch_size,), generator=g)
        noise = torch.randn(x0.shape, generator=torch.Generator(device).manual_seed(step), device=device)
        return flow_matching_loss(transformer, x0, context, text, sigmas[i].to(device), timesteps[i].to(device), weights[i].to(device), noise), ""

    _train_loop(folder, transformer.parameters(), lambda f: pipe.save_pretrained(f / "model"), step_loss, minutes,
                lr, 0.01, 50, cooldown=cooldown, decay=decay)  # fmt: skip


@torch.no_grad()
def check_base(clips: int = 4, steps: int = 20) -> dict:
    """Does the base use its inputs? On held-out clips (20 steps, Euler, seed 0): the copy task's
    PSNR against the source (guidance none); generation from a caption with an empty context
    (text CFG scale 5) under the clip's own caption and under another clip's: the mean absolute
    change of the output in grey levels, and each one's PSNR to the clip the caption describes;
    and the change between "sketch style. <caption>" and "thermal style. <caption>"; colourisation
    (the context the clip in grey, CFG 5): the PSNR of sketch and thermal clips rebuilt from their
    grey with their prompt, and the change between colourising the plain clip's grey as sketch and
    as thermal. Writes toy/work/base/check.json."""
    from pickstyle.pipeline.schedulers import make_scheduler
    from pickstyle.settings import style_prompt
    from pickstyle.toy.model import toy_stylize
    from pickstyle.toy.quality import psnr

    pipe = _base_pipeline()
    pipe.scheduler = make_scheduler("euler", 3.0)
    scenes = [make_scene_clip(np.random.default_rng(HELD_OUT_SEED + 500 + i), FRAMES, SIZE, SIZE) for i in range(clips)]
    settings = {"steps": steps, "skip": 0, "text_scale": 5.0, "negative_prompt": "", "max_sequence_length": 32}

    def run(video, prompt, guidance):
        return toy_stylize(pipe, settings, video, prompt, seed=0, guidance=guidance, apg=False).astype(np.float64)

    result = {"copy_psnr": [], "generate_caption_change": [], "generate_psnr_own": [], "generate_psnr_other": [],
              "generate_style_word_change": [], "colorize_psnr_own_style": [], "colorize_style_word_change": []}  # fmt: skip
    for i, (frames, caption) in enumerate(scenes):
        other = scenes[(i + 1) % clips][1]
        result["copy_psnr"].append(psnr(run(frames, caption, "none"), frames))
        blank = np.zeros_like(frames)
        own, swapped = run(blank, caption, "cfg"), run(blank, other, "cfg")
        result["generate_caption_change"].append(float(np.abs(own - swapped).mean()))
        result["generate_psnr_own"].append(psnr(own, frames))
        result["generate_psnr_other"].append(psnr(swapped, frames))
        sketch, thermal = (run(blank, style_prompt(s, caption), "cfg") for s in ("sketch", "thermal"))
        result["generate_style_word_change"].append(float(np.abs(sketch - thermal).mean()))
        for style in ("sketch", "thermal"):
            truth = np.stack([STYLES[style](f) for f in frames])
            result["colorize_psnr_own_style"].append(psnr(run(_gray(truth), style_prompt(style, caption), "cfg"), truth))
        sketch, thermal = (run(_gray(frames), style_prompt(s, caption), "cfg") for s in ("sketch", "thermal"))
        result["colorize_style_word_change"].append(float(np.abs(sketch - thermal).mean()))
    summary = {k: round(float(np.mean(v)), 2) for k, v in result.items()}
    (WORK / "base" / "check.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


PAIR_SCENES = 400  # procedural still scenes for the adapter's pairs (seeds [i, 3] for i < PAIR_SCENES)
PHOTO_CROPS = 48  # 64x64 crops of matplotlib's sample photo of Grace Hopper (public domain, US Navy)


def make_pairs() -> Path:
    """Write the adapter's training pairs to toy/work/pairs: each procedural still scene and each
    photo crop with its five styled versions, and manifest.jsonl with the prompts
    "<style> style. <description>" (crops of the photo: "<style> style.")."""
    import matplotlib.cbook
    from PIL import Image

    from pickstyle.settings import style_prompt

    folder = WORK / "pairs"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    stills = [make_scene_clip(np.random.default_rng([i, 3]), 1, SIZE, SIZE, motion=False) for i in range(PAIR_SCENES)]
    scenes = [(f"scene{i:04d}", frames[0], text) for i, (frames, text) in enumerate(stills)]
    photo = np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"))
    rng = np.random.default_rng(4)
    for i in range(PHOTO_CROPS):
        side = int(rng.integers(96, 400))
        top, left = int(rng.integers(0, photo.shape[0] - side)), int(rng.integers(0, photo.shape[1] - side))
        crop = Image.fromarray(photo[top : top + side, left : left + side]).resize((SIZE, SIZE), Image.BICUBIC)
        scenes.append((f"photo{i:03d}", np.asarray(crop), None))
    lines = []
    for name, image, text in scenes:
        Image.fromarray(image).save(folder / "images" / f"{name}.png")
        for style, fn in STYLES.items():
            target = f"images/{name}_{style.replace(' ', '-')}.png"
            Image.fromarray(fn(image)).save(folder / target)
            prompt = style_prompt(style, text) if text else f"{style} style."
            lines.append(json.dumps({"source": f"images/{name}.png", "target": target, "prompt": prompt, "style": style}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "manifest.jsonl"


ADAPTER_VARIANTS = {"pickstyle": [], "no-motion": ["--no-motion"], "main-qkv": ["--targets", "main-qkv"]}


def bundled_adapter(variant: str) -> Path:
    """The bundled fp16 copy of adapter `variant` (`export` writes it)."""
    from pickstyle.toy.model import ASSETS, TOY_MODEL

    return TOY_MODEL / "adapter" if variant == "pickstyle" else ASSETS / "ablations" / f"{variant}.safetensors"


def train_adapter(variant: str, steps: int | None = None, device: str = "cpu", lr: float | None = None,
                  from_bundle: bool = False) -> None:  # fmt: skip
    """Train the toy adapter (or an ablation) with `pickstyle train` and toy/adapter.yaml into
    toy/work/adapters/<variant>, on the CPU or (`device` not "cpu") the GPU; resumes from its
    latest checkpoint when there is one. `from_bundle`: start from the bundled adapter's weights
    (`init_adapter`), to carry it over to a base trained further; `lr` overrides the file's."""
    from pickstyle.cli import main as pickstyle

    manifest = WORK / "pairs" / "manifest.jsonl"
    if not manifest.is_file():
        make_pairs()
    output = WORK / "adapters" / variant
    argv = ["train", "--config", str(Path(__file__).parent / "adapter.yaml"), "--model", str(base_model()),
            "--data", str(manifest), "--output", str(output), *ADAPTER_VARIANTS[variant]]  # fmt: skip
    if steps:
        argv += ["--max-steps", str(steps)]
    if lr is not None:
        argv += ["--lr", str(lr)]
    if from_bundle:  # fresh AdamW moments: warm up
        argv += ["--init-adapter", str(bundled_adapter(variant)), "--warmup-steps", "100"]
    if device != "cpu":
        argv.append("--no-cpu")
    if (output / "checkpoints").is_dir() and any((output / "checkpoints").iterdir()):
        argv.append("--resume")
    if pickstyle(argv):
        raise SystemExit(f"pickstyle train failed for {variant}")


TUNE_SEED = HELD_OUT_SEED + 700  # validation clips for choosing the toy model's defaults (not the benchmark's)
TUNE_CLIPS = 4  # validation clips (2 until step 7327's bundle: settings chosen on 2 picked the own style on 2 of 3 benchmark clips)
TUNE_SKIPS = (0, 2, 4)  # of 20 steps (earlier bases were also tuned at 6, 8 and 10: never best for a style after step 5830)
TUNE_SCALES = ((1.0, 1.0), (1.5, 1.0), (2.0, 1.0), (3.0, 1.0), (4.0, 1.0), (2.0, 1.5), (3.0, 1.5), (3.0, 2.0), (5.0, 2.0))  # (w_t, w_c); (1, 1) is no guidance
TUNE_LEAD_INS = (0, 4)  # lead-in frames (fd88076's bundle tried 4 only at each style's choice without it)
RATED_KEYS = STYLE_SETTING_KEYS  # the settings `tune` and `refine` vary: every one a style may set
UNRATED_KEYS = {"guidance_end": 1.0, "negative_prompt": "", "steps": 20, "samples": 1}  # what rows rated before a key was rated hold (tune.json's older rows lack it): TOY_SETTINGS'
WARP_BAR = 1.5  # issue 5: a warping error within 1.5x the ground truth's


def _rater(clips: int, steps: int, adapter: Path):
    """A function rating one sampling setting (RATED_KEYS) of the base with the PickStyle `adapter`
    for some styles on the first `clips` validation clips: {<setting>, psnr: {style: dB}, own:
    {style: fraction of clips nearest its own style's truth}, warp_vs_truth: {style: warping error
    over the truth's}} (the checks of issue 5), confused_with: {style: the other style nearest the
    output (PSNR) on the clip where the own style's lead over the others is least, or a miss is
    worst: the style it is most nearly mistaken for}}."""
    from pickstyle.eval.metrics import warp_error
    from pickstyle.pipeline.schedulers import make_scheduler
    from pickstyle.settings import style_prompt
    from pickstyle.toy.model import load_toy_pipeline, toy_stylize
    from pickstyle.toy.quality import psnr, score

    pipe, _ = load_toy_pipeline(base_model(), adapter=str(adapter))
    pipe.scheduler = make_scheduler(TOY_SETTINGS["scheduler"], TOY_SETTINGS["shift"])  # the sampler the bundle will carry
    scenes = [make_scene_clip(np.random.default_rng(TUNE_SEED + i), FRAMES, SIZE, SIZE) for i in range(clips)]
    truths = [{style: np.stack([fn(f) for f in frames]) for style, fn in STYLES.items()} for frames, _ in scenes]
    truth_warp = {style: np.mean([warp_error(ts[style], frames) for (frames, _), ts in zip(scenes, truths)]) for style in STYLES}

    def rate(setting: dict, styles=tuple(STYLES)) -> dict:
        settings = {**TOY_SETTINGS, "style_settings": {}, "steps": steps, **setting}  # a row's own steps, if it has them
        row = dict(setting, psnr={}, own={}, warp_vs_truth={}, confused_with={})
        for style in styles:
            outputs = [toy_stylize(pipe, settings, frames, style_prompt(style, text)) for frames, text in scenes]
            scores = [score(out, frames, ts, style) for out, (frames, _), ts in zip(outputs, scenes, truths)]
            nearest_other = []  # per clip: (own PSNR minus the nearest other style's, that style)
            for out, ts, sc in zip(outputs, truths, scores):
                others = {other: psnr(out, ts[other]) for other in STYLES if other != style}
                nearest = max(others, key=others.get)
                nearest_other.append((sc["psnr"] - others[nearest], nearest))
            row["confused_with"][style] = min(nearest_other)[1]
            row["psnr"][style] = round(float(np.mean([sc["psnr"] for sc in scores])), 2)
            row["own"][style] = float(np.mean([sc["own_style_closest"] for sc in scores]))
            row["warp_vs_truth"][style] = round(float(np.mean([sc["warp_error"] for sc in scores]) / truth_warp[style]), 2)
        print(row, flush=True)
        return row

    return rate


def rated_adapter() -> Path:
    """The PickStyle adapter `tune` and `refine` rate with: the one `adapter` trained
    (toy/work/adapters/pickstyle/adapter, git-ignored) when it is here, else the bundled fp16 copy
    that `export` made of it (so a fresh clone can tune, and resume a tune, without retraining)."""
    trained = WORK / "adapters" / "pickstyle" / "adapter"
    if (trained / "pytorch_lora_weights.safetensors").is_file():
        return trained
    bundled = bundled_adapter("pickstyle")
    if not (bundled / "pytorch_lora_weights.safetensors").is_file():
        raise SystemExit(f"{trained} is missing: run `python toy/build.py adapter` first")
    print(f"{trained} is missing: rating with the bundled adapter {bundled}", flush=True)
    return bundled


def rating_id(adapter: Path) -> str:
    """The first 12 hex digits of the sha256 of the weights a rating runs on: the adapter folder's
    weights file, then every weights file of the base (`base_model`, its VAE included, which
    `decoder` fine-tunes). `tune` and `refine` reuse only rows rated with the same id."""
    import hashlib

    digest = hashlib.sha256((adapter / "pytorch_lora_weights.safetensors").read_bytes())
    for path in sorted(base_model().rglob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def rating_sampler() -> str:
    """The sampler `_rater` rates with, as `tune` and `refine` record it: TOY_SETTINGS' scheduler and
    flow shift (rows rated at another shift are rated afresh, like rows of other weights)."""
    return f"{TOY_SETTINGS['scheduler']} shift {TOY_SETTINGS['shift']:g}"


def _rated_with(clips: int, steps: int, adapter: Path) -> dict:
    """What a rating depends on besides its setting: {"clips", "steps", "weights": `rating_id`,
    "sampler": `rating_sampler`}. `tune` and `refine` store it beside their rows and reuse rows only
    where all four match."""
    return {"clips": clips, "steps": steps, "weights": rating_id(adapter), "sampler": rating_sampler()}


def _setting_value(row: dict, key: str):
    """A rated row's value of one of RATED_KEYS (UNRATED_KEYS' where the row is older than the key)."""
    return row[key] if key in row else UNRATED_KEYS[key]


def _setting_key(row: dict) -> tuple:
    return tuple(_setting_value(row, k) for k in RATED_KEYS)


def tune(clips: int = TUNE_CLIPS, steps: int = 20, reuse_grid: bool = False) -> dict:
    """Choose the toy model's sampling settings on `clips` validation clips (not the benchmark's):
    every style at every skip of TUNE_SKIPS, scales of TUNE_SCALES and lead-in of TUNE_LEAD_INS,
    guided throughout (guidance_end 1; `refine` tries shorter intervals), each rated as `_rater` says; `choose_settings` ranks them. `reuse_grid`: keep the rows of
    toy/work/tune.json rated on as many clips and steps with the same weights (the adapter
    `rated_adapter` gives and the base) and sampler, and rate only the others (so an interrupted
    tune resumes). Writes toy/work/tune.json after every row: {"clips", "steps", "weights":
    `rating_id`, "sampler": `rating_sampler`, "grid": [rows], "default": {skip, text_scale,
    context_scale, lead_in, guidance_end, negative_prompt}, "chosen": {style: {...}}}; `refine` then narrows "chosen" on more
    clips."""
    stored = json.loads((WORK / "tune.json").read_text()) if reuse_grid and (WORK / "tune.json").is_file() else {}
    adapter_dir = rated_adapter()
    key = _rated_with(clips, steps, adapter_dir)
    rated = {_setting_key(row): row for row in stored["grid"]} if all(stored.get(k) == v for k, v in key.items()) else {}
    settings = [{"skip": skip, "text_scale": wt, "context_scale": wc, "lead_in": lead_in, **UNRATED_KEYS, "steps": steps}
                for lead_in in TUNE_LEAD_INS for skip in TUNE_SKIPS for wt, wc in TUNE_SCALES]  # fmt: skip
    rate, grid = None, []
    for setting in settings:
        if _setting_key(setting) not in rated:
            rate = rate or _rater(clips, steps, adapter_dir)  # loads the model only when a row is left to rate
            rated[_setting_key(setting)] = rate(setting)
        grid.append(rated[_setting_key(setting)])
        result = {**key, "grid": grid, **choose_settings(grid, RATED_KEYS)}
        _write_tune(result)
    print(json.dumps({"default": result["default"], "chosen": result["chosen"]}))
    return result


REFINE_TOP = 8  # settings per style that `refine` rates again
REFINE_CLIPS = 12  # validation clips for them (the first TUNE_CLIPS are tune's)
REFINE_INTERVAL_TOP = 2  # then its best guided settings on them that it also rates guided on part of the steps only
REFINE_GUIDANCE_ENDS = (0.35, 0.5, 0.7)  # those parts (guidance_end; sketch took 0.35 and blueprint 0.7 in probes)
REFINE_NULL_TOP = 2  # and its best settings guided by text that it also rates with the style it is confused with as the null text
REFINE_STEPS_TOP = 1  # and its best settings that it also rates at fewer sampling steps,
REFINE_STEPS = (4, 8)  # these (in a probe on 24 validation clips, blueprint at 4 steps: warping error 1.18x the truth's against 1.70x at 20, +0.2 dB)
REFINE_SAMPLES_TOP = 1  # and its best settings of one sample that it also rates as the mean of more samples,
REFINE_SAMPLES = (2, 4)  # these many (`num_samples`; in a probe on the 12 validation clips, sepia 1.79x -> 1.57x / 1.44x the truth's warping error, +0.5 dB)


def refine(clips: int = REFINE_CLIPS, top: int = REFINE_TOP, interval_top: int = REFINE_INTERVAL_TOP,
           null_top: int = REFINE_NULL_TOP, steps_top: int = REFINE_STEPS_TOP, samples_top: int = REFINE_SAMPLES_TOP) -> dict:
    """Successive halving on `tune`'s grid: per style, its `top` settings by `rank_key` on the tune's
    clips are rated again on `clips` validation clips (the tune's first), for that style only (4
    clips cannot tell a style picked on 70% of clips from one picked on all); then the style's
    `interval_top` best settings rated on those clips that guide (a text or context scale above 1)
    throughout are rated again guided only on the first REFINE_GUIDANCE_ENDS of the steps (a strong
    text scale early sets the style, unguided late steps keep the source's detail and flicker
    less); then its `null_top` best settings guided by text (w_t above 1, no null text yet) are
    rated again with the null text "<style> style." of the style its best one is most nearly
    mistaken for (`_rater`'s confused_with; that row is rated again first if it is older than it):
    text guidance then pushes away from the style it is confused with instead of from no style; then
    its `steps_top` best settings at the tune's steps are rated again at each of REFINE_STEPS
    sampling steps (fewer steps follow the model's mean more and invent less detail frame by
    frame); then its `samples_top` best settings of one sample rated again as the mean of each of
    REFINE_SAMPLES samples (`num_samples`: what the samples share stays, what each invents frame by
    frame averages out); the style takes the best of all by the same key. Adds to toy/work/tune.json, after every
    row, "refine": {"clips", "steps", "top", "interval_top", "null_top", "steps_top", "samples_top", "weights", "sampler", "rows":
    [rows rating one style each]} and replaces "chosen"; resumes from the rows it finds there, and
    in toy/work/probes.json (settings tried by hand, the same form), for as many clips and steps
    and the same weights (`rating_id`) and sampler (`rating_sampler`), and keeps those not on its
    lists among the candidates (a re-rated grid may drop a setting the more clips preferred: what
    was measured on them is not thrown away). The grid may come from other weights or another
    sampler (said in one line; say a re-trained adapter, a fine-tuned decoder or a new shift):
    refine then re-rates its shortlist with the current ones. Returns the new tune.json."""
    path = WORK / "tune.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run `python toy/build.py tune` first")
    result = json.loads(path.read_text())
    shortlist = [(style, _setting_key(row)) for style in STYLES
                 for row in sorted(result["grid"], key=lambda r: rank_key(r, style), reverse=True)[:top]]  # fmt: skip
    adapter_dir = rated_adapter()
    key = _rated_with(clips, result["steps"], adapter_dir)
    if (result.get("weights"), result.get("sampler")) != (key["weights"], key["sampler"]):
        print(f"the grid was rated with weights {result.get('weights')} and sampler {result.get('sampler')}, not {key['weights']}"
              f" and {key['sampler']}: refining its shortlist with these")  # fmt: skip
    rated, probes = {}, WORK / "probes.json"
    for stored in (json.loads(probes.read_text()) if probes.is_file() else {}, result.get("refine", {})):
        if all(stored.get(k) == v for k, v in key.items()):
            rated.update({(*r["psnr"], _setting_key(r)): r for r in stored["rows"]})
    from_grid = choose_settings(result["grid"], RATED_KEYS)["chosen"]  # for styles not yet refined
    done, rate = {}, None

    def rate_pair(style: str, setting: tuple, again: bool = False) -> dict:
        nonlocal rate
        if again or (style, setting) not in rated:
            rate = rate or _rater(clips, result["steps"], adapter_dir)
            rated[style, setting] = rate(dict(zip(RATED_KEYS, setting)), (style,))
        done[style, setting] = rated[style, setting]
        rows = [*done.values(), *(row for pair, row in rated.items() if pair not in done)]  # those rated before: kept
        result["refine"] = {**key, "top": top, "interval_top": interval_top, "null_top": null_top, "steps_top": steps_top,
                            "samples_top": samples_top, "rows": rows}  # fmt: skip
        result["chosen"] = {**from_grid, **choose_settings(rows, RATED_KEYS)["chosen"]}
        _write_tune(result)
        return rated[style, setting]

    def best(style: str, keep) -> list[dict]:
        return sorted((row for (st, _), row in rated.items() if st == style and keep(row)), key=lambda r: rank_key(r, style), reverse=True)

    for style, setting in shortlist:
        rate_pair(style, setting)
    for style in STYLES:
        guided = best(style, lambda r: _setting_value(r, "guidance_end") == 1.0 and (r["text_scale"], r["context_scale"]) != (1.0, 1.0))
        for row in guided[:interval_top]:
            for guidance_end in REFINE_GUIDANCE_ENDS:
                rate_pair(style, _setting_key({**row, "guidance_end": guidance_end}))
    for style in STYLES:
        by_text = best(style, lambda r: r["text_scale"] > 1.0 and not _setting_value(r, "negative_prompt"))[:null_top]
        if by_text and style not in by_text[0].get("confused_with", {}):
            by_text[0] = rate_pair(style, _setting_key(by_text[0]), again=True)
        for row in by_text:
            rate_pair(style, _setting_key({**row, "negative_prompt": f"{by_text[0]['confused_with'][style]} style."}))
    for key_name, start, values, key_top in (("steps", result["steps"], REFINE_STEPS, steps_top), ("samples", 1, REFINE_SAMPLES, samples_top)):
        for style in STYLES:  # from the best rows at the tune's steps (one sample), the same at each of `values`
            for row in best(style, lambda r: _setting_value(r, key_name) == start)[:key_top]:
                for value in values:
                    rate_pair(style, _setting_key({**row, key_name: value}))
    print(json.dumps({"chosen": result["chosen"]}))
    return result


def _write_tune(result: dict) -> None:
    """Write toy/work/tune.json whole or not at all (a tune killed mid-write keeps the last one)."""
    from pickstyle.files import atomic_output

    with atomic_output(WORK / "tune.json") as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1) + "\n")


SAMPLES_COST_DB = 0.3  # what each doubling of the samples (and of the time) must gain in PSNR to be taken (`rank_key`)


def rank_key(row: dict, style: str) -> tuple:
    """How `tune` ranks a grid row for a style: nearest its own style's truth on the most clips,
    then within WARP_BAR of the truth's warping error, then the best PSNR less SAMPLES_COST_DB per
    doubling of the samples (a mean of more samples is taken for a check, or for enough dB)."""
    cost = SAMPLES_COST_DB * math.log2(_setting_value(row, "samples"))
    return (row["own"][style], row["warp_vs_truth"][style] <= WARP_BAR, row["psnr"][style] - cost)


def choose_settings(grid: list[dict], keys) -> dict:
    """From rated rows ({<keys>, psnr: {style: dB}, own: {style: fraction}, warp_vs_truth:
    {style: ratio}}, rating all styles or some): per style its best row by `rank_key`; the
    default, the row of best mean PSNR among those rating every style. Returns {"default": {key:
    value}, "chosen": {style: {key: value}}}."""
    styles = list(dict.fromkeys(style for r in grid for style in r["psnr"]))
    best = {style: max((r for r in grid if style in r["psnr"]), key=lambda r: rank_key(r, style)) for style in styles}
    full = [r for r in grid if len(r["psnr"]) == len(styles)]
    default = max(full, key=lambda r: np.mean(list(r["psnr"].values()))) if full else None
    return {"default": default and {k: _setting_value(default, k) for k in keys},
            "chosen": {style: {k: _setting_value(row, k) for k in keys} for style, row in best.items()}}


DEMO_SEED, DEMO_FRAMES = 30_000_000, 18  # the bundled demo clip: a held-out scene, 18 frames at 8 fps (2 windows of 9)
TOY_SETTINGS = {  # `pickstyle stylize` defaults for the toy model (src/pickstyle/assets/pickstyle-tiny/pickstyle.json)
    "name": "pickstyle-tiny",
    "description": "a toy stand-in for Wan2.1-VACE trained on two CPU cores (docs/model-card.md); toy styles only",
    "styles": list(STYLES), "size": f"{SIZE}x{SIZE}", "frames": FRAMES, "fps": 8.0, "steps": 20,
    "skip": 0, "text_scale": 1.5, "context_scale": 1.0, "lead_in": 4,  # tune.json's "default"
    "style_settings": {  # for base step 9407: tune.json's "chosen" (refine's) but blueprint's, from work/probes.json (the same `rank_key` over both), and sepia's, from work/probes-24.json (`rank_key` on 24 clips)
        "sketch": {"skip": 0, "text_scale": 3.0, "context_scale": 1.5, "lead_in": 4, "guidance_end": 0.35, "negative_prompt": "sepia style.", "steps": 20, "samples": 2},
        "sepia": {"skip": 0, "text_scale": 1.5, "context_scale": 1.0, "lead_in": 4, "guidance_end": 1.0, "negative_prompt": "", "steps": 4, "samples": 2},
        "blueprint": {"skip": 0, "text_scale": 3.0, "context_scale": 1.0, "lead_in": 4, "guidance_end": 0.85, "negative_prompt": "sepia style.", "steps": 8, "samples": 1},
        "thermal": {"skip": 0, "text_scale": 1.5, "context_scale": 1.0, "lead_in": 4, "guidance_end": 0.35, "negative_prompt": "", "steps": 20, "samples": 2},
        "night vision": {"skip": 0, "text_scale": 2.0, "context_scale": 1.0, "lead_in": 0, "guidance_end": 1.0, "negative_prompt": "", "steps": 20, "samples": 1},
    },
    "scheduler": "euler", "shift": 3.0, "negative_prompt": "",
    "max_sequence_length": 32, "adapter": "adapter",
}  # fmt: skip


def _fp16_adapter(folder: Path, target: Path) -> None:
    """Copy an adapter's LoRA file (diffusers format) as fp16, keeping its metadata; a target that
    already holds the same tensors and metadata is left as it is (safetensors writes the metadata
    in an order that changes between runs, so a rewrite would change the bundle's bytes)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    def read(path: Path):
        with safe_open(str(path), "pt") as f:
            return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}

    metadata, tensors = read(folder / "pytorch_lora_weights.safetensors")
    tensors = {k: v.half().contiguous() for k, v in tensors.items()}
    if target.is_file():
        old_metadata, old = read(target)
        if old_metadata == metadata and old.keys() == tensors.keys() and all(torch.equal(old[k], v) for k, v in tensors.items()):
            return
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target), metadata=metadata)


def export(settings: dict | None = None) -> None:
    """Write the bundled assets under src/pickstyle/assets: the base model in fp16 with the
    PickStyle adapter and pickstyle.json (pickstyle-tiny/), the ablation adapters (ablations/)
    and the demo clip (demo.mp4, demo.txt). An adapter whose trained weights are not here (a
    fresh clone: they are git-ignored) keeps its bundled copy. The model folder is written beside
    and renamed into place, so a failed export leaves the bundled one whole."""
    import shutil

    from pickstyle.pipeline.pipeline import PickStylePipeline
    from pickstyle.toy.model import ASSETS, DEMO_CLIP, TOY_MODEL
    from pickstyle.video.io import write_video

    pipe = PickStylePipeline.from_pretrained(base_model())
    staging = TOY_MODEL.with_name(TOY_MODEL.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    pipe.to(torch.float16).save_pretrained(staging)
    if (TOY_MODEL / "adapter").is_dir():
        shutil.copytree(TOY_MODEL / "adapter", staging / "adapter")  # kept unless trained weights replace it below
    for variant in ADAPTER_VARIANTS:
        trained = WORK / "adapters" / variant / "adapter"
        target = staging / "adapter" / "pytorch_lora_weights.safetensors" if variant == "pickstyle" else ASSETS / "ablations" / f"{variant}.safetensors"
        if trained.is_dir():
            _fp16_adapter(trained, target)
        else:
            print(f"{trained} is missing: keeping the bundled {target.name}", flush=True)
    (staging / "pickstyle.json").write_text(json.dumps(settings or TOY_SETTINGS, indent=1) + "\n")
    shutil.rmtree(TOY_MODEL, ignore_errors=True)
    staging.rename(TOY_MODEL)
    frames, description = make_scene_clip(np.random.default_rng(DEMO_SEED), DEMO_FRAMES, SIZE, SIZE)
    write_video(DEMO_CLIP, frames, fps=TOY_SETTINGS["fps"])
    DEMO_CLIP.with_suffix(".txt").write_text(description + "\n")
    sizes = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    print(f"wrote {ASSETS}: {sizes / 1e6:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("vae", "vae-ceiling", "decoder", "base-cache", "base-retext", "base", "base-check", "pairs", "adapter", "tune", "refine", "export"))
    parser.add_argument("--variant", choices=tuple(ADAPTER_VARIANTS), default="pickstyle", help="adapter: which")
    parser.add_argument("--steps", type=int, help="adapter: optimiser steps (default: toy/adapter.yaml's)")
    parser.add_argument("--minutes", type=float, default=60.0, help="wall time to train this call")
    parser.add_argument("--cooldown", type=int, default=0, help="base: end with the learning rate falling linearly to 0 over this many steps")
    parser.add_argument("--decay", action="store_true", help="base, decoder: the learning rate falls linearly to 0 over this call's --minutes")
    parser.add_argument("--widen", type=int, default=1, help="decoder: first widen it this many times (function kept; run once)")
    parser.add_argument("--device", default="cpu", help="base, adapter: where to train (cpu, cuda)")
    parser.add_argument("--batch", type=int, default=8, help="base: clips per step")
    parser.add_argument("--lr", type=float, help="base: peak learning rate (default 4e-4); decoder: learning rate (default 2e-4); adapter: toy/adapter.yaml's")
    parser.add_argument("--from-bundle", action="store_true", help="adapter: start from the bundled adapter's weights (after the base trained on)")
    parser.add_argument("--temporal-weight", type=float, default=1.0, help="decoder: weight of the frame-to-frame term")
    parser.add_argument("--online", action="store_true", help="base: make and encode clips on the fly instead of reading the cache (GPU)")
    parser.add_argument("--workers", type=int, default=8, help="base --online: processes making clips")
    parser.add_argument("--reuse-grid", action="store_true", help="tune: keep the settings work/tune.json rated on as many clips and steps, rate only the others")
    parser.add_argument("--clips", type=int, default=3000, help="base-cache, base-retext: plain clips (to encode, in the cache)")
    parser.add_argument("--styled", type=int, default=1500, help="base-cache: clips in the toy styles to encode")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.stage == "base-check":
        print(json.dumps(check_base()))
        return
    if args.stage == "tune":
        tune(reuse_grid=args.reuse_grid)
        return
    if args.stage == "refine":
        refine()
        return
    if args.stage == "export":
        export()
        return
    if args.stage == "pairs":
        print(make_pairs())
        return
    if args.stage == "adapter":
        train_adapter(args.variant, args.steps, args.device, args.lr, args.from_bundle)
        return
    if args.stage == "base-cache":
        cache_base_latents(args.clips, args.styled)
        return
    if args.stage == "base-retext":
        retext_base(args.clips)
        return
    lr = {} if args.lr is None else {"lr": args.lr}  # else the stage's own default
    if args.stage == "base":
        train_base(args.minutes, batch_size=args.batch, cooldown=args.cooldown, device=args.device, online=args.online,
                   decay=args.decay, workers=args.workers, **lr)  # fmt: skip
        return
    if args.stage == "decoder":
        tune_decoder(args.minutes, temporal_weight=args.temporal_weight, widen=args.widen, decay=args.decay, **lr)
        return
    if args.stage == "vae":
        train_vae(args.minutes)
    print(json.dumps(vae_ceiling()))


if __name__ == "__main__":
    main()
