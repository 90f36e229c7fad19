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
import time
from pathlib import Path

import numpy as np
import torch

from pickstyle.toy import STYLES, make_scene_clip

WORK = Path(__file__).parent / "work"
SIZE, FRAMES = 64, 9
HELD_OUT_SEED = 10_000_000  # scenes from this seed on are never trained on
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
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1


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
                log_every: int, checkpoint_minutes: float = 5.0) -> None:  # fmt: skip
    """The loop every stage shares: AdamW on `params` (gradient clip 1.0) for `minutes` of wall
    time, resumed from `folder` (state.json; optimizer.pt too where present: it stays out of git to
    keep the repository small, so a fresh clone resumes with new AdamW moments); `step_loss(step)` returns the loss and
    a note for the log; a log line every `log_every` steps; `save_model(folder)` with the
    optimizer every `checkpoint_minutes` and at the end."""
    params = list(params)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    state = {"step": 0, "seconds": 0.0}
    if (folder / "state.json").is_file():
        state = json.loads((folder / "state.json").read_text())
    if (folder / "optimizer.pt").is_file():
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))

    def save(seconds: float) -> None:
        state["seconds"] += seconds
        save_model(folder)
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")
        (folder / "state.json").write_text(json.dumps(state))

    log = (folder / "train.log").open("a")
    started = last_save = window = time.time()
    losses = []
    while time.time() - started < minutes * 60:
        loss, note = step_loss(state["step"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        losses.append(loss.item())
        if state["step"] % log_every == 0:
            seconds = (time.time() - window) / len(losses)
            log.write(f"step {state['step']} loss {np.mean(losses):.4f}{note} {seconds:.2f} s/step\n")
            log.flush()
            losses, window = [], time.time()
        if time.time() - last_save > checkpoint_minutes * 60:
            save(time.time() - last_save)
            last_save = time.time()
    save(time.time() - last_save)


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
        return (out - x).abs().mean() + mse, f" batch PSNR {psnr:.1f} dB"

    _train_loop(folder, vae.parameters(), lambda f: vae.save_pretrained(f / "vae"), step_loss, minutes, lr, 0.0, 50)


@torch.no_grad()
def vae_ceiling(clips: int = 12) -> dict:
    """Reconstruction PSNR (dB) of the VAE on held-out clips, plain and per style."""
    folder = WORK / "vae"
    vae = _load_vae(folder).eval()
    result = {}
    for style in [None, *STYLES]:
        x = torch.stack([toy_clip(HELD_OUT_SEED + i, style) for i in range(clips)])
        out = vae.decode(vae.encode(x).latent_dist.mode()).sample
        mse = ((out - x) ** 2).mean(dim=(1, 2, 3, 4)).clamp_min(1e-10)
        result[style or "plain"] = round(float((10 * torch.log10(4 / mse)).mean()), 2)
    (folder / "ceiling.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


TOY_WORDS = [
    *STYLES, "style", "a", "an", "and", "moving", "under", "blue", "sky", "on", "striped", "wall",
    "checkerboard", "smooth", "gradient", "mottled", "texture", "red", "orange", "yellow", "green",
    "purple", "white", "black", "circle", "square", "triangle", "ring", "night", "vision",
]  # fmt: skip
BASE_CONFIG = dict(
    patch_size=(1, 2, 2), num_attention_heads=6, attention_head_dim=32, in_channels=16, out_channels=16,
    text_dim=64, freq_dim=256, ffn_dim=512, num_layers=6, vace_layers=[0, 2, 4], vace_in_channels=2 * 16 + 16,
)  # fmt: skip
TASKS = ("copy", "generate", "inpaint")  # drawn with probabilities 0.4, 0.3, 0.3


def _new_base():
    """A PickStylePipeline of the trained VAE, a fresh transformer, a frozen random umT5 of width
    64 and a tokenizer trained on the toy vocabulary."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanVACETransformer3DModel
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel

    from pickstyle.pipeline import PickStylePipeline

    specials = ["<pad>", "</s>", "<unk>"]
    trainer = trainers.UnigramTrainer(vocab_size=160, special_tokens=specials, unk_token="<unk>")
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator([" ".join(TOY_WORDS)] * 8 + TOY_WORDS, trainer=trainer)
    scores = dict(map(tuple, json.loads(tok.to_str())["model"]["vocab"]))
    pieces = sorted(((p, float(v)) for p, v in scores.items() if p not in specials), key=lambda x: (-x[1], x[0]))
    tokenizer = T5Tokenizer(vocab=[(p, 0.0) for p in specials] + pieces, extra_ids=0)
    torch.manual_seed(1)
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), d_model=64, d_kv=16, d_ff=128, num_layers=2,
                                               num_heads=4, relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1))  # fmt: skip
    torch.manual_seed(2)
    transformer = WanVACETransformer3DModel(**BASE_CONFIG)
    return PickStylePipeline(tokenizer=tokenizer, text_encoder=text_encoder.eval(), vae=_load_vae(WORK / "vae").eval(),
                             scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), transformer=transformer)  # fmt: skip


def _base_example(pipe, seed: int, embed):
    """One training example for the base: (x0, context, text) of a plain clip under a random task."""
    rng = np.random.default_rng(seed)
    frames, description = make_scene_clip(np.random.default_rng(int(rng.integers(HELD_OUT_SEED))), FRAMES, SIZE, SIZE)
    video = (torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1)[None]
    task = TASKS[rng.choice(3, p=[0.4, 0.3, 0.3])]
    mask = torch.ones_like(video)
    source = video
    if task == "generate":
        source = torch.zeros_like(video)
    elif task == "inpaint":
        h, w = (int(v) for v in rng.integers(SIZE // 4, SIZE // 2 + 1, 2))
        top, left = (int(v) for v in rng.integers(0, SIZE - h + 1, 2))
        mask = torch.zeros_like(video)
        mask[..., top : top + h, left : left + w] = 1
        source = video * (1 - mask)
    with torch.no_grad():
        context = pipe.prepare_context(source, mask=mask if task == "inpaint" else None)
        x0 = pipe.encode_latents(video)
    return x0, context, embed(description), rng


def train_base(minutes: float, lr: float = 3e-4) -> None:
    """Train the VACE base from scratch with the rectified-flow objective of `pickstyle train`."""
    from pickstyle.pipeline import PickStylePipeline
    from pickstyle.training import flow_grid, flow_matching_loss, loss_weights

    folder = WORK / "base"
    folder.mkdir(parents=True, exist_ok=True)
    model_dir = folder / "model"
    pipe = PickStylePipeline.from_pretrained(model_dir) if (model_dir / "model_index.json").is_file() else _new_base()
    pipe.set_progress_bar_config(disable=True)
    transformer = pipe.transformer.train()
    pipe.text_encoder.requires_grad_(False)
    pipe.vae.requires_grad_(False)
    cache = {}

    def embed(text):
        if text not in cache:
            with torch.no_grad():
                cache[text] = pipe.encode_prompt(text, do_classifier_free_guidance=False, max_sequence_length=32)[0]
        return cache[text]

    sigmas, timesteps = flow_grid(3.0)
    weights = loss_weights(timesteps)

    def step_loss(step: int):
        x0, context, text, _ = _base_example(pipe, step, embed)
        g = torch.Generator().manual_seed(step)
        i = int(torch.randint(0, 1000, (1,), generator=g))
        noise = torch.randn(x0.shape, generator=g)
        return flow_matching_loss(transformer, x0, context, text, sigmas[i], timesteps[i], weights[i], noise), ""

    _train_loop(folder, transformer.parameters(), lambda f: pipe.save_pretrained(f / "model"), step_loss, minutes,
                lr, 0.01, 100)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("vae", "vae-ceiling", "base"))
    parser.add_argument("--minutes", type=float, default=60.0, help="wall time to train this call")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.stage == "base":
        train_base(args.minutes)
        return
    if args.stage == "vae":
        train_vae(args.minutes)
    print(json.dumps(vae_ceiling()))


if __name__ == "__main__":
    main()
