"""The toy model's quality benchmark: held-out toy clips with moving objects and a panning camera,
rendered in each toy style, scored against the exact ground truth style(frame).

Rows: the source unchanged (the floor), the ground truth (the ceiling), the ground truth through
the model's VAE (the ceiling of anything generated in its latent space), PickStyle with the toy
model's defaults (CS-CFG, permuted null context), and one change at a time: the zero null context,
plain CFG, context guidance, its output deflickered (a post-process), one sample instead of the
mean of several, no guidance, one skip for every style (0, 4), no lead-in, the model-wide skip
and scales instead of its settings per style, the style words without the scene description, no
adapter, an adapter trained on static clips and an adapter on the main blocks instead of the
VACE blocks.
Per row and style: PSNR and SSIM against the ground truth, warping error, edge structure kept
from the source, and how often the output is closest to its own style's truth.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pickstyle.errors import PickStyleError

CLIP_SEED = 20_000_000  # benchmark clips: held-out scenes (training draws seeds below toy.HELD_OUT_SEED)


@dataclass(frozen=True)
class Row:
    """One benchmark row: `adapter` is "default", None (no adapter) or an ablation adapter's name
    under assets/ablations; `overrides` go to `PickStylePipeline.__call__`."""

    name: str
    note: str
    adapter: str | None = "default"
    overrides: dict = field(default_factory=dict)
    describe: bool = True  # the prompt has the scene description after "<style> style."
    skip: int | None = None  # skip for 20 steps (scaled to the steps used); None: the model's
    per_style: bool = True  # the model's settings per style (pickstyle.json's style_settings); False: its model-wide ones
    deflicker: float = 0.0  # strength of `deflicker.deflicker` on the output (0: none)


ROWS = [
    Row("source unchanged", "floor: the source video itself", adapter=None),
    Row("ground truth", "ceiling: style(frame), exact", adapter=None),
    Row("truth through the vae", "ceiling of any model in this latent space: style(frame) encoded and decoded (after the style's lead-in)", adapter=None),
    Row("pickstyle", "CS-CFG, permuted null context, the model's defaults"),
    Row("zero null context", "CS-CFG with the context of a black video as the null", overrides={"null_context": "zero"}),
    Row("plain cfg", "text guidance only (context in both branches)", overrides={"guidance": "cfg"}),
    Row("context guidance 1.5", "CS-CFG with w_c = 1.5 (permuted null) and each style's other settings", overrides={"context_guidance_scale": 1.5}),
    Row("context 1.5, zero null", "as 'context guidance 1.5' with the zero null context",
        overrides={"context_guidance_scale": 1.5, "null_context": "zero"}),
    Row("deflicker 0.5", "the pickstyle row's output smoothed along the source's motion (--deflicker 0.5; not in the paper)", deflicker=0.5),
    Row("one sample", "each style's settings with one sample, not the mean of its `samples` (a test-time ensemble, not in the paper)",
        overrides={"num_samples": 1}),
    Row("no guidance", "one pass per step", overrides={"guidance": "none"}),
    Row("skip 0", "start from pure noise", skip=0),
    Row("skip 4", "start at step 4 of 20 (scaled) from the noised source", skip=4),
    Row("no lead-in", "no frames generated before the clip, for the styles whose settings have them", overrides={"lead_in_frames": 0}),
    Row("one setting for all", "the model-wide skip and scales for every style, not its settings per style", per_style=False),
    Row("style words only", "prompt '<style> style.' without the description", describe=False),
    Row("no adapter", "the base model alone", adapter=None),
    Row("static-clip adapter", "adapter trained without camera motion (--no-motion)", adapter="no-motion"),
    Row("main-block adapter", "LoRA on the main blocks' self-attention (--targets main-qkv)", adapter="main-qkv"),
]
REFERENCE_ROWS = ("source unchanged", "ground truth")


def benchmark_clips(count: int, frames: int = 9, size: int = 64) -> list[tuple[np.ndarray, str]]:
    """`count` held-out toy clips with moving shapes and a panning camera: (uint8 [T, H, W, 3], description)."""
    from pickstyle.toy.scenes import make_scene_clip

    return [make_scene_clip(np.random.default_rng(CLIP_SEED + i), frames, size, size) for i in range(count)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 videos (peak 255, MSE over every pixel and channel), capped at
    100 dB (identical videos)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 255.0**2 * 1e-10)))


def video_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over frames and RGB channels of two uint8 videos [T, H, W, 3]."""
    from pickstyle.eval.metrics import ssim

    return float(np.mean([ssim(x[..., c] / 255.0, y[..., c] / 255.0) for x, y in zip(a, b) for c in range(3)]))


def score(output: np.ndarray, source: np.ndarray, truths: dict[str, np.ndarray], style: str) -> dict:
    """Metrics of one output against the ground truth of `style` and the source; `truths` holds
    every style's ground truth, to tell whether the output is closest to its own."""
    from pickstyle.eval.metrics import edge_ssim, warp_error

    others = {name: psnr(output, truth) for name, truth in truths.items()}
    return {
        "psnr": others[style],
        "ssim": video_ssim(output, truths[style]),
        "warp_error": warp_error(output, source),
        "edge_ssim": edge_ssim(output, source),
        "own_style_closest": float(max(others, key=others.get) == style),
    }


def _ablation_adapter(name: str) -> Path | None:
    from pickstyle.toy.model import ASSETS

    path = ASSETS / "ablations" / f"{name}.safetensors"
    return path if path.is_file() else None


def run_rows(rows, styles, clips, steps=None, seed=2025, progress=True, model=None):
    """Score each row on each style and clip. Returns (results, notes): results[row][style] is a
    dict of metric -> mean over clips; rows whose adapter is missing are left out with a note."""
    from tqdm.auto import tqdm

    from pickstyle.settings import resolve, scale_skip, style_prompt
    from pickstyle.toy.model import (
        TOY_MODEL,
        load_toy_pipeline,
        toy_stylize,
        vae_round_trip,
    )
    from pickstyle.toy.scenes import STYLES
    from pickstyle.video.postprocess import deflicker

    model = model or TOY_MODEL
    truths = [{name: np.stack([STYLES[name](f) for f in frames]) for name in STYLES} for frames, _ in clips]
    results, notes, loaded = {}, [], (object(), None, None)  # (adapter, pipe, settings) in memory
    stylised = {}  # (adapter, overrides, describe, skip, per_style, style, clip): the output, which a row adding only a post-process reuses
    total = len(rows) * len(styles) * len(clips)
    bar = tqdm(total=total, desc="bench quality", unit="video", disable=not progress)
    for row in rows:
        adapter = row.adapter
        if adapter not in ("default", None):
            adapter = _ablation_adapter(adapter)
            if adapter is None:
                notes.append(f"{row.name}: left out, its adapter assets/ablations/{row.adapter}.safetensors is missing")
                bar.update(len(styles) * len(clips))
                continue
        if row.name not in REFERENCE_ROWS and loaded[0] != adapter:  # rows come grouped by adapter
            loaded = (adapter, *load_toy_pipeline(model, adapter=adapter))
        results[row.name] = {}
        for style in styles:
            scores = []
            for clip, ((frames, description), truth) in enumerate(zip(clips, truths)):
                if row.name == "source unchanged":
                    output = frames
                elif row.name == "ground truth":
                    output = truth[style]
                elif row.name == "truth through the vae":
                    lead_in = resolve(loaded[2], style_prompt(style, description))["lead_in"]
                    output = vae_round_trip(loaded[1], truth[style], lead_in)  # on the footing of the pickstyle row
                else:
                    key = (adapter, repr(row.overrides), row.describe, row.skip, row.per_style, style, clip)
                    if key not in stylised:
                        _, pipe, settings = loaded
                        if not row.per_style:
                            settings = dict(settings, style_settings={})
                        prompt = style_prompt(style, description) if row.describe else f"{style} style."
                        overrides = dict(row.overrides, num_inference_steps=steps or resolve(settings, prompt)["steps"])
                        if row.skip is not None:
                            overrides["skip_steps"] = scale_skip(row.skip, overrides["num_inference_steps"])
                        stylised[key] = toy_stylize(pipe, settings, frames, prompt, seed, **overrides)
                    output = stylised[key]
                    if row.deflicker:
                        output = deflicker(output, frames, row.deflicker)
                scores.append(score(output, frames, truth, style))
                bar.update()
            results[row.name][style] = {k: float(np.nanmean([s[k] for s in scores])) for k in scores[0]}
    bar.close()
    return results, notes


def criteria(results: dict, styles) -> list[tuple[str, bool, str]]:
    """The issue's bar for the toy model, per style: (what, passed, measured)."""
    checks = []
    if "pickstyle" not in results:
        return checks
    for style in styles:
        ours, floor, top = (results[r][style] for r in ("pickstyle", "source unchanged", "ground truth"))
        gain = ours["psnr"] - floor["psnr"]
        checks.append((f"{style}: PSNR beats the source by >= 3 dB", gain >= 3, f"{gain:+.1f} dB"))
        checks.append((f"{style}: closest to its own style's truth", ours["own_style_closest"] == 1.0,
                       f"{ours['own_style_closest']:.0%} of clips"))  # fmt: skip
        ratio = ours["warp_error"] / max(top["warp_error"], 1e-9)
        checks.append((f"{style}: warping error <= 1.5x the ground truth's", ratio <= 1.5, f"{ratio:.2f}x"))
    return checks


def markdown_tables(results: dict, styles) -> str:
    """A table of each row's metrics averaged over styles, then PSNR per style."""
    metrics = ("psnr", "ssim", "warp_error", "edge_ssim", "own_style_closest")
    lines = ["| row | PSNR (dB) | SSIM | warp error | edge SSIM | own style closest |", "|---|---|---|---|---|---|"]
    for name, per_style in results.items():
        mean = {m: np.mean([per_style[s][m] for s in styles]) for m in metrics}
        lines.append(f"| {name} | {mean['psnr']:.2f} | {mean['ssim']:.3f} | {mean['warp_error']:.4f} | "
                     f"{mean['edge_ssim']:.3f} | {mean['own_style_closest']:.0%} |")  # fmt: skip
    lines += ["", "| row | " + " | ".join(styles) + " |", "|---|" + "---|" * len(styles)]
    for name, per_style in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{per_style[s]['psnr']:.2f}" for s in styles) + " |")
    return "\n".join(lines)


def plot(results: dict, styles, path: Path) -> Path:
    """A PNG: PSNR against the ground truth per row and style (the ground truth row, 100 dB by
    definition, left out), and warping error per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pickstyle.files import atomic_output

    names = list(results)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 1.3]})
    width = 0.8 / len(styles)
    shown = [n for n in names if n != "ground truth"]
    x = np.arange(len(shown))
    for i, style in enumerate(styles):
        ax1.bar(x + i * width - 0.4 + width / 2, [results[n][style]["psnr"] for n in shown], width, label=style)
    ax1.set_xticks(x, shown, rotation=35, ha="right", fontsize=8)
    ax1.set_ylabel("PSNR vs ground truth (dB)")
    ax1.legend(fontsize=7, ncol=len(styles))
    ax1.set_title("closeness to the exact stylisation (higher is better)")
    x = np.arange(len(names))
    ax2.barh(x, [np.mean([results[n][s]["warp_error"] for s in styles]) for n in names], color="grey")
    ax2.set_yticks(x, names, fontsize=8)
    ax2.invert_yaxis()
    ax2.set_xlabel("warping error (lower is better)")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path



def run_quality_benchmark(args) -> dict:
    """Run the benchmark as `args` say; print the tables and the criteria; write the results."""
    import platform

    import torch

    from pickstyle.files import atomic_output
    from pickstyle.toy.scenes import STYLES

    styles = args.styles or list(STYLES)
    for style in styles:
        if style not in STYLES:
            raise PickStyleError(f"--styles {style!r}: the toy styles are {', '.join(STYLES)}")
    known = {r.name: r for r in ROWS}
    for name in args.rows or []:
        if name not in known:
            raise PickStyleError(f"--rows {name!r}: not a row (rows: {', '.join(known)})")
    rows = [known[n] for n in REFERENCE_ROWS] + [r for r in ROWS if r.name in (args.rows or known) and r.name not in REFERENCE_ROWS]
    if args.clips < 1:
        raise PickStyleError(f"--clips {args.clips}: must be at least 1")
    started = time.perf_counter()
    clips = benchmark_clips(args.clips)
    results, notes = run_rows(rows, styles, clips, args.steps, args.seed, not args.quiet)
    seconds = time.perf_counter() - started
    checks = criteria(results, styles)
    tables = markdown_tables(results, styles)
    print(tables)
    for note in notes:
        print(note)
    for what, passed, measured in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {what}: {measured}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "results": results, "criteria": [{"check": c, "passed": p, "measured": m} for c, p, m in checks],
        "notes": notes, "clips": args.clips, "styles": styles, "steps": args.steps, "seed": args.seed,
        "seconds": round(seconds, 1), "machine": f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}",
    }  # fmt: skip
    with atomic_output(out / "results.json") as tmp:
        Path(tmp).write_text(json.dumps(record, indent=1) + "\n")
    with atomic_output(out / "results.md") as tmp:
        Path(tmp).write_text(tables + "\n")
    plot(results, styles, out / "results.png")
    print(f"wrote {out}/results.json, results.md, results.png ({seconds:.0f} s)")
    return record
