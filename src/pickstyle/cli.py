"""The `pickstyle` command line: `stylize`, `train`, `clips`, `eval`, `demo`, `bench`, `styles`,
`make-tiny-model`.

Heavy imports (torch, diffusers) happen inside the commands, so `pickstyle --help` is fast.
Bad input exits with code 2 and one line on stderr; no output file is left behind. An unexpected
failure exits with code 1 and one line too; `--debug` (or PICKSTYLE_DEBUG=1) adds the traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from pickstyle import __version__
from pickstyle.errors import SEED_LIMIT, PickStyleError
from pickstyle.pipeline.schedulers import SCHEDULERS

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".gif")
DEBUG_ENV = "PICKSTYLE_DEBUG"


def _number(kind, minimum=None):
    """An argparse type: `kind` (int or float), finite, and at least `minimum` if given."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not finite")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is {'negative' if minimum == 0 else f'below {minimum}'}")
        return value

    return parse


_finite_float, _non_negative_float = _number(float), _number(float, 0)
_positive_int, _non_negative_int = _number(int, 1), _number(int, 0)


def _seed(text: str) -> int:
    """An argparse type: an integer seed in [0, 2^64)."""
    value = _non_negative_int(text)
    if value >= SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"{text!r} is too large (seeds are 0 to 2^64 - 1)")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `pickstyle stylize: error: ...`, exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


DEBUG_HELP = f"print the full traceback of an unexpected error (or set {DEBUG_ENV}=1)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pickstyle",
        description="Video-to-video style transfer with context-style adapters on Wan2.1-VACE (PickStyle).",
    )
    parser.add_argument("--version", action="version", version=f"pickstyle {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    # every subcommand takes --debug too; SUPPRESS keeps its absence from undoing `pickstyle --debug CMD`
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add_command(name, **kwargs):
        return commands.add_parser(name, parents=[common], **kwargs)

    s = add_command(
        "stylize",
        help="render a video in a style given by a prompt",
        description="Render INPUT in the style the prompt names, keeping its content and motion.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    s.add_argument("input", help="source video (any format ffmpeg reads) or a folder of frames")
    s.add_argument("-p", "--prompt", required=True, help="'<style> style. <description>', or the description with --style")
    s.add_argument("-o", "--output", required=True, help="output video: .mp4, .mov, .mkv, .webm or .gif")
    s.add_argument("--model", help="diffusers Wan2.1-VACE folder (or hub id), e.g. Wan2.1-VACE-14B-diffusers; default: the bundled toy model pickstyle-tiny (toy styles only)")
    s.add_argument("--adapter", help="style adapter: diffusers LoRA file/folder or the authors' .pth/.safetensors (default: the model's own, if its pickstyle.json names one)")
    s.add_argument("--no-adapter", action="store_true", help="run the base model without any style adapter")
    s.add_argument("--adapter-scale", type=_finite_float, default=1.0, help="strength of the adapter")
    s.add_argument("--style", help="preset (see `pickstyle styles`): adds '<Style> style. ' to the prompt, sets --skip")
    s.add_argument("--steps", type=_positive_int, default=None, help="sampling steps (default: the model's, or its setting for the prompt's style, else 20)")
    s.add_argument("--skip", type=_non_negative_int, default=None, help="start at this step from the noised source (default: 4 of 20 steps, or the style's; scaled to --steps)")
    s.add_argument("--lead-in", type=_non_negative_int, default=None, help="generate this many frames (a multiple of 4) mirrored before the clip and drop them, so no output frame comes from the VAE's first latent frame (default: the model's, else 0)")
    s.add_argument("--guidance-end", type=_non_negative_float, default=None, help="guide only this first fraction of the steps, in (0, 1]; the rest take one pass (default: the model's, else 1)")
    s.add_argument("--samples", type=_positive_int, default=None, help="average the videos of this many initial noises: less flicker, that many times the time (a test-time ensemble, not in the paper; default: the model's, else 1)")
    s.add_argument("--deflicker", type=_non_negative_float, default=0.0, help="smooth the output along the source's motion with this strength in [0, 1), e.g. 0.5 (a post-process, not in the paper; default 0: off)")
    s.add_argument("--text-scale", type=_non_negative_float, default=None, help="w_t: style (text) guidance (default: the model's, else 5)")
    s.add_argument("--context-scale", type=_non_negative_float, default=None, help="w_c: content (context) guidance; 0 = off (default: the model's, else 4)")
    s.add_argument("--guidance", choices=("cs-cfg", "cfg", "none"), default="cs-cfg", help="guidance mode")
    s.add_argument("--null-context", choices=("permute", "zero"), default="permute", help="CS-CFG's null context")
    s.add_argument("--no-apg", action="store_true", help="plain guidance arithmetic instead of APG")
    s.add_argument("--negative-prompt", default=None, help="null text (default: the model's or its style's, else Wan's standard negative prompt)")
    s.add_argument("--seed", type=_seed, default=2025, help="seed of every random draw, 0 to 2^64 - 1")
    s.add_argument("--size", default=None, help="480p, 720p (area, aspect kept) or WxH (exact, cropped) (default: the model's, else 480p)")
    s.add_argument("--frames", type=_positive_int, default=None, help="frames to generate, 4k+1 (default: up to 81 over the clip)")
    s.add_argument("--fps", type=_non_negative_float, default=None, help="frame rate of the output (default: the model's, else 16)")
    s.add_argument("--scheduler", choices=SCHEDULERS, default=None, help="sampler (default: the model's, else dpm++)")
    s.add_argument("--shift", type=_non_negative_float, default=None, help="flow shift of the sampler's sigmas (default: the model's, else 16)")
    s.add_argument("--device", default="auto", help="auto, cuda, cuda:N, mps or cpu")
    s.add_argument("--dtype", choices=("auto", "bf16", "fp16", "fp32"), default="auto", help="auto: bf16 on GPU, fp32 on CPU")
    s.add_argument("--offload", choices=("none", "model", "sequential"), default="none", help="CPU offload to save GPU memory")
    s.add_argument("--batch-guidance", action="store_true", help="run the guidance passes as one batch (more memory, faster)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_stylize)

    tr = add_command(
        "train",
        help="train a style adapter on image pairs",
        description="Train a context-style adapter (LoRA on the VACE self-attention) on paired images. "
        "Settings come from --config (YAML), then from flags; every key is a flag. "
        "Many GPUs: accelerate launch -m pickstyle train ...",
    )
    from pickstyle.train.config import add_train_arguments

    add_train_arguments(tr)
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=cmd_train)

    c = add_command(
        "clips",
        help="preview the synthetic training clips of a dataset",
        description="Write a video of sampled training clips (source | style, same camera motion), "
        "and print what the datasets hold.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    c.add_argument("data", nargs="+", help="dataset folders (v1, v2) or manifests (.jsonl, .csv)")
    c.add_argument("-o", "--output", required=True, help="preview video (.mp4, .gif, ...)")
    c.add_argument("-n", "--count", type=_positive_int, default=6, help="clips to show")
    c.add_argument("--height", type=_positive_int, default=240)
    c.add_argument("--width", type=_positive_int, default=416)
    c.add_argument("--frames", type=_positive_int, default=33, help="frames per clip")
    c.add_argument("--fps", type=_non_negative_float, default=16.0)
    c.add_argument("--seed", type=_seed, default=0)
    c.add_argument("--no-motion", action="store_true", help="static clips, as training with --no-motion")
    c.set_defaults(func=cmd_clips)

    e = add_command(
        "eval",
        help="score stylised videos against their source",
        description="Score one or more stylised videos against the source: temporal consistency, "
        "flicker, structure and motion kept (no weights needed); CLIP and DINO scores with local "
        "model folders. See the README for each metric's formula and direction.",
    )
    e.add_argument("source", help="the source video")
    e.add_argument("stylised", nargs="+", help="stylised video(s) of that source")
    e.add_argument("-p", "--prompt", help="the prompt used (for the CLIP text score and the true style)")
    e.add_argument("--clip", help="local CLIP folder (transformers format), e.g. clip-vit-large-patch14")
    e.add_argument("--dino", help="local DINOv2 folder (transformers format), e.g. dinov2-base")
    e.add_argument("--styles", nargs="+", help="style names for CLIP zero-shot R-precision (with --clip and --prompt)")
    e.add_argument("--json", help="write every score, its direction and the settings here")
    e.add_argument("--plot", help="write a PNG bar chart comparing the stylised videos here")
    e.set_defaults(func=cmd_eval)

    d = add_command(
        "demo",
        help="stylise the bundled clip into every toy style with the bundled toy model",
        description="Render the bundled clip in every style of the bundled toy model (pickstyle-tiny) "
        "and write one labelled side-by-side video: source, then each style. CPU, no download.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d.add_argument("-o", "--output", default="pickstyle-demo.mp4", help="output video")
    d.add_argument("--styles", nargs="+", help="toy styles to render (default: all)")
    d.add_argument("--seed", type=_seed, default=2025, help="seed of every random draw")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_demo)

    b = add_command(
        "bench",
        help="benchmarks: `bench quality` scores the toy model against exact ground truth",
        description="Run a benchmark. quality: the toy model on held-out moving clips, every toy style, "
        "PSNR/SSIM against the exact stylised frames, warping error and edge structure, with the "
        "ablation rows of docs/results.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    b.add_argument("name", choices=("quality",), help="which benchmark")
    from pickstyle.toy.quality import ROWS

    b.add_argument("--clips", type=_positive_int, default=4, help="held-out clips per style")
    b.add_argument("--styles", nargs="+", help="toy styles (default: all)")
    b.add_argument("--rows", nargs="+", help=f"rows to run (default: all): {', '.join(r.name for r in ROWS)}")
    b.add_argument("--steps", type=_positive_int, help="sampling steps (default: the toy model's)")
    b.add_argument("--seed", type=_seed, default=2025)
    b.add_argument("--out", default="bench-quality", help="folder for results.json, results.md, results.png")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_bench)

    st = add_command("styles", help="list the style presets")
    st.set_defaults(func=cmd_styles)

    t = add_command("make-tiny-model", help="write a tiny random Wan2.1-VACE model folder (for smoke tests)")
    t.add_argument("directory", help="folder to create")
    t.add_argument("--seed", type=_seed, default=0)
    t.set_defaults(func=cmd_make_tiny_model)
    return parser


def cmd_styles(args) -> int:
    from pickstyle.pipeline.styles import STYLE_PRESETS

    print(f"{'style':<12} {'prompt prefix':<24} skip (of 20 steps)")
    for key, preset in STYLE_PRESETS.items():
        print(f"{key:<12} {preset.prefix!r:<24} {preset.skip_steps}")
    return 0


def _quiet_libraries() -> None:
    """No progress bars from diffusers and transformers (model loading, shard writing)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def cmd_train(args) -> int:
    from pickstyle.train.config import resolve_config

    config = resolve_config(args)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    config.check()
    if args.quiet:
        _quiet_libraries()
    from pickstyle.train.trainer import train

    result = train(config, progress=not args.quiet)
    adapter = result.adapter
    if result.is_main:
        print(f"wrote {adapter} (use: pickstyle stylize VIDEO -p PROMPT --adapter {adapter} --model {config.model})")
    return 0


def cmd_clips(args) -> int:
    from pickstyle.train.data import scan_datasets
    from pickstyle.train.preview import preview_clips
    from pickstyle.video.io import write_video

    output = check_output_path(args.output)
    report = scan_datasets(args.data)
    print(report.summary())
    report.raise_if_problems()
    frames = preview_clips(report.pairs, args.count, args.height, args.width, args.frames, args.seed, not args.no_motion)
    write_video(output, frames, fps=args.fps)
    print(f"wrote {output}: {args.count} clips of {args.frames} frames, {frames.shape[2]}x{frames.shape[1]}")
    return 0


def cmd_eval(args) -> int:
    from pickstyle.eval.metrics import evaluate
    from pickstyle.eval.report import format_table, plot_results, write_json

    for option, suffix in (("json", ".json"), ("plot", ".png")):
        value = getattr(args, option)
        if value and not value.lower().endswith(suffix):
            raise PickStyleError(f"--{option} {value}: must end in {suffix}")
    if args.styles and not (args.clip and args.prompt):
        raise PickStyleError("--styles needs --clip and --prompt (the prompt names the true style)")
    results = []
    for stylised in args.stylised:
        result = evaluate(
            args.source, stylised, prompt=args.prompt, clip_dir=args.clip, dino_dir=args.dino, styles=args.styles
        )
        results.append({"source": args.source, "stylised": stylised, **result})
        for note in result["notes"]:
            print(f"{Path(stylised).name}: {note}")
    print(format_table(results))
    if args.json:
        print(f"wrote {write_json(results, args.json)}")
    if args.plot:
        print(f"wrote {plot_results(results, args.plot)}")
    return 0


def cmd_demo(args) -> int:
    from pickstyle.toy.demo import run_demo

    output = check_output_path(args.output)
    path = run_demo(output, styles=args.styles, seed=args.seed, progress=not args.quiet)
    print(f"wrote {path}")
    return 0


def cmd_bench(args) -> int:
    from pickstyle.toy.quality import run_quality_benchmark

    run_quality_benchmark(args)
    return 0


def cmd_make_tiny_model(args) -> int:
    from pickstyle.testing import save_tiny_model

    path = save_tiny_model(args.directory, seed=args.seed)
    print(f"wrote a tiny random Wan2.1-VACE model to {path} (outputs are noise; for smoke tests only)")
    return 0


def check_output_path(path: str) -> Path:
    """The output path, if its suffix is a video format and its folder can be written."""
    out = Path(path)
    if out.suffix.lower() not in VIDEO_SUFFIXES:
        raise PickStyleError(f"{path}: output must end in one of {', '.join(VIDEO_SUFFIXES)}")
    if out.is_dir():
        raise PickStyleError(f"{path}: is a directory, not an output file")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise PickStyleError(f"{path}: cannot write there ({parent} is not a writable folder)")
    return out


def resolve_device_dtype(device: str, dtype: str):
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    try:
        torch_device = torch.device(device)
    except RuntimeError:
        raise PickStyleError(f"--device {device!r}: not a device (use auto, cuda, cuda:N, mps or cpu)") from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise PickStyleError(f"--device {device}: CUDA is not available on this machine")
    if dtype == "auto":
        dtype = "fp32" if torch_device.type == "cpu" else "bf16"
    return torch_device, {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]


def stylize_model(model: str | None) -> tuple[str, dict]:
    """The model folder (or hub id) to stylise with and its pickstyle.json settings; without
    --model, the bundled toy model (said in one line)."""
    from pickstyle.settings import model_settings

    if model is not None:
        return model, model_settings(model)
    from pickstyle.toy.model import TOY_MODEL

    if not (TOY_MODEL / "model_index.json").is_file():
        raise PickStyleError(f"no --model given and the bundled toy model is missing ({TOY_MODEL})")
    settings = model_settings(str(TOY_MODEL))
    print("no --model: using the bundled toy model pickstyle-tiny (64x64, 9 frames; styles: "
          f"{', '.join(settings.get('styles', []))}); pass --model for Wan2.1-VACE")  # fmt: skip
    return str(TOY_MODEL), settings


def describe(settings: dict, arguments: dict, deflicker: float = 0.0) -> str:
    """The sampling settings of a stylise, for the banner."""
    s = settings
    lead_in = f", lead-in {s['lead_in']}" if s["lead_in"] else ""
    parts = [f"{s['steps']} steps (skip {s['skip']}{lead_in}), {arguments['guidance']} w_t={s['text_scale']:g} "
             f"w_c={s['context_scale']:g}" + (f" on the first {s['guidance_end']:g} of the steps" if s["guidance_end"] < 1 else "")
             + (" +APG" if arguments["apg"] else "")]  # fmt: skip
    if s["negative_prompt"]:
        parts.append(f"null text {s['negative_prompt']!r}")
    if s["samples"] > 1:
        parts.append(f"mean of {s['samples']} samples")
    if deflicker:
        parts.append(f"deflicker {deflicker:g}")
    parts.append(f"{s['scheduler']} shift {s['shift']:g}")
    return ", ".join(parts)


def cmd_stylize(args) -> int:
    from pickstyle.pipeline.styles import get_style
    from pickstyle.settings import DEFAULTS, call_arguments, resolve
    from pickstyle.video.frames import parse_size

    started = time.perf_counter()
    # Cheap checks first: nothing slow runs before the input is known to be good.
    if not Path(args.input).exists():
        raise PickStyleError(f"{args.input}: no such file or folder")
    output = check_output_path(args.output)
    preset = get_style(args.style) if args.style else None
    prompt = preset.prompt(args.prompt) if preset else args.prompt
    if not prompt.strip():
        raise PickStyleError("--prompt is empty")
    args.model, file_settings = stylize_model(args.model)
    flags = {key: getattr(args, key, None) for key in DEFAULTS if key != "adapter"}
    settings = resolve(file_settings, prompt, flags, preset)
    adapter = None if args.no_adapter else args.adapter or settings["adapter"]
    size = parse_size(settings["size"])
    if args.deflicker >= 1:
        raise PickStyleError(f"--deflicker {args.deflicker:g}: must be in [0, 1)")

    import torch

    from pickstyle.pipeline.schedulers import make_scheduler
    from pickstyle.video.frames import fit_size, restore_aspect
    from pickstyle.video.io import read_video, write_video

    frames, source_fps = read_video(args.input, num_frames=settings["frames"] or "auto")
    src_h, src_w = frames.shape[1:3]
    device, dtype = resolve_device_dtype(args.device, args.dtype)
    if args.offload == "sequential" and device.type == "cpu":
        raise PickStyleError("--offload sequential needs a GPU (--device cuda)")

    if args.quiet:
        _quiet_libraries()
    from pickstyle.pipeline.lead_in import with_lead_in
    from pickstyle.pipeline.pipeline import load_pipeline

    pipe = load_pipeline(args.model, dtype)
    multiple = pipe.size_multiple
    if isinstance(size, tuple):
        height, width = size
        if height % multiple or width % multiple:
            raise PickStyleError(f"--size {settings['size']}: width and height must be multiples of {multiple}")
    else:
        height, width = fit_size(src_h, src_w, size, multiple)
    pipe.scheduler = make_scheduler(settings["scheduler"], settings["shift"])
    if adapter:
        pipe.load_style_adapter(adapter, scale=args.adapter_scale)
    if args.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif args.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=args.quiet)
    arguments = dict(call_arguments(settings), guidance=args.guidance, null_context=args.null_context, apg=not args.no_apg,
                     batch_guidance=args.batch_guidance)  # fmt: skip
    print(f"stylizing {args.input}: {prompt!r}, {len(frames)} frames at {width}x{height}, {describe(settings, arguments, args.deflicker)}, "
          f"seed {args.seed}, {device}", flush=True)  # fmt: skip
    result = with_lead_in(pipe, frames, prompt=prompt, height=height, width=width, num_frames=len(frames),
                          generator=torch.Generator("cpu").manual_seed(args.seed), **arguments)  # fmt: skip
    video = restore_aspect(result.frames[0], src_h, src_w)
    if args.deflicker:
        from pickstyle.video.postprocess import deflicker

        video = deflicker(video, frames, args.deflicker)
    write_video(output, video, fps=settings["fps"])
    seconds = time.perf_counter() - started
    print(
        f"wrote {output}: {len(video)} frames, {video.shape[2]}x{video.shape[1]}, {settings['fps']:g} fps "
        f"(source {src_w}x{src_h} at {source_fps:.3g} fps), {seconds:.1f} s"
    )
    return 0


def describe_failure(err: BaseException) -> str:
    """One line for an unexpected exception: its type, its message (first line, at most 300
    characters; an OSError's file included) and the last place in pickstyle it passed through."""
    import traceback

    text = " ".join(str(err).split()) or "(no message)"
    if isinstance(err, OSError) and err.filename and str(err.filename) not in text:
        text += f": {err.filename}"
    text = text if len(text) <= 300 else text[:297] + "..."
    frames = traceback.extract_tb(err.__traceback__)
    ours = [f for f in frames if f"{os.sep}pickstyle{os.sep}" in f.filename] or frames
    where = f" (in {Path(ours[-1].filename).name}:{ours[-1].lineno}, {ours[-1].name})" if ours else ""
    return f"{type(err).__name__}: {text}{where}"


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand. Exit codes: 0 done, 2 bad input (one line naming it), 1 an unexpected
    failure (one line; --debug or PICKSTYLE_DEBUG=1 print the traceback), 130 interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"pickstyle {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            import traceback

            traceback.print_exc()
        if isinstance(err, PickStyleError):
            print(f"pickstyle {args.command}: error: {err}", file=sys.stderr)
            return 2
        if type(err).__name__ == "OutOfMemoryError":
            print(f"pickstyle {args.command}: error: out of GPU memory; try --offload model, a smaller --size or fewer --frames",
                  file=sys.stderr)  # fmt: skip
            return 1
        hint = "" if debug else f"; for the traceback run again with --debug or {DEBUG_ENV}=1"
        print(f"pickstyle {args.command}: failed: {describe_failure(err)}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
