"""Rebuild the toy model (pickstyle-tiny) from scratch on a CPU, stage by stage, resumably.

    python toy/build.py vae --minutes 60      # the VAE: reconstruction of toy scenes and their styles
    python toy/build.py vae-ceiling           # its PSNR per style on held-out clips -> toy/work/vae/ceiling.json

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


def train_vae(minutes: float, batch_size: int = 4, lr: float = 1e-3, checkpoint_minutes: float = 5.0) -> None:
    """Train the VAE for `minutes` of wall time: L1 + MSE of the decoded posterior mean."""
    folder = WORK / "vae"
    folder.mkdir(parents=True, exist_ok=True)
    vae = _load_vae(folder).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    state = {"step": 0, "seconds": 0.0}
    if (folder / "state.json").is_file():
        state = json.loads((folder / "state.json").read_text())
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    log = (folder / "train.log").open("a")
    started = last_save = window = time.time()
    losses = []
    while time.time() - started < minutes * 60:
        x = _batch(state["step"], batch_size)
        out = vae.decode(vae.encode(x).latent_dist.mode()).sample
        loss = (out - x).abs().mean() + ((out - x) ** 2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        losses.append(loss.item())
        if state["step"] % 50 == 0:
            psnr = 10 * np.log10(4 / max(((out - x) ** 2).mean().item(), 1e-10))
            log.write(f"step {state['step']} loss {np.mean(losses):.4f} batch PSNR {psnr:.1f} dB "
                      f"{(time.time() - window) / len(losses):.2f} s/step\n")  # fmt: skip
            log.flush()
            losses, window = [], time.time()
        if time.time() - last_save > checkpoint_minutes * 60:
            _save(vae, optimizer, state, folder, time.time() - last_save)
            last_save = time.time()
    _save(vae, optimizer, state, folder, time.time() - last_save)


def _save(vae, optimizer, state, folder: Path, seconds: float) -> None:
    state["seconds"] += seconds
    vae.save_pretrained(folder / "vae")
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    (folder / "state.json").write_text(json.dumps(state))


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("vae", "vae-ceiling"))
    parser.add_argument("--minutes", type=float, default=60.0, help="wall time to train this call")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.stage == "vae":
        train_vae(args.minutes)
    print(json.dumps(vae_ceiling()))


if __name__ == "__main__":
    main()
