"""The `pickstyle` command line end to end on the tiny model folder, and its bad inputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pickstyle.cli import main
from pickstyle.pipeline.adapters import export_authors_format, save_style_adapter
from pickstyle.pipeline.styles import STYLE_PRESETS
from pickstyle.video.io import read_video, write_video

from .conftest import moving_square_video, random_adapter_transformer


@pytest.fixture(scope="module")
def source_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "clip.mp4"
    write_video(path, moving_square_video(num_frames=14, height=48, width=80), fps=24)
    return path


def _stylize(model, source, output, *extra):
    argv = ["stylize", str(source), "-p", "a red square moving", "-o", str(output), "--model", str(model)]
    argv += ["--size", "80x48", "--steps", "4", "--quiet", *extra]
    return main(argv)


def _exit_code(argv) -> int:
    """main(argv)'s exit code, argparse's errors (SystemExit) included."""
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


def test_help_and_version_do_not_import_torch():
    code = "import sys, pickstyle.cli as c; c.build_parser(); assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run([sys.executable, "-m", "pickstyle", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip().startswith("pickstyle 0.")
    out = subprocess.run([sys.executable, "-m", "pickstyle", "stylize", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--context-scale" in out.stdout and "--offload" in out.stdout


def test_stylize_deflicker_smooths_the_output_along_the_source(tiny_model_dir, source_video, tmp_path):
    from pickstyle.eval.metrics import warp_error
    from pickstyle.video.postprocess import deflicker

    plain, smooth = tmp_path / "plain.mp4", tmp_path / "smooth.mp4"
    assert _stylize(tiny_model_dir, source_video, plain.with_suffix(".gif"), "--frames", "9") == 0
    assert _stylize(tiny_model_dir, source_video, smooth.with_suffix(".gif"), "--frames", "9", "--deflicker", "0.6") == 0
    source = read_video(source_video, num_frames=9)[0]
    raw, out = read_video(plain.with_suffix(".gif"))[0], read_video(smooth.with_suffix(".gif"))[0]
    assert out.shape == raw.shape == (9, 48, 80, 3)
    # the CLI's output is the plain one deflickered (gif: lossless up to its palette)
    assert np.abs(out.astype(int) - deflicker(raw, source, 0.6).astype(int)).mean() < 4
    assert warp_error(out, source) < warp_error(raw, source)


def test_styles_lists_every_preset(capsys):
    assert main(["styles"]) == 0
    out = capsys.readouterr().out
    for key, preset in STYLE_PRESETS.items():
        line = next(line for line in out.splitlines() if line.startswith(key + " "))
        assert preset.prefix.strip() in line and line.split()[-1] == str(preset.skip_steps)


def test_stylize_end_to_end(tiny_model_dir, source_video, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    assert _stylize(tiny_model_dir, source_video, out, "--frames", "9") == 0
    frames, fps = read_video(out)
    assert frames.shape == (9, 48, 80, 3) and fps == pytest.approx(16)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"wrote {out}: 9 frames, 80x48, 16 fps")
    # the same seed gives the same video; another seed another one
    again = tmp_path / "again.mp4"
    assert _stylize(tiny_model_dir, source_video, again, "--frames", "9") == 0
    assert np.array_equal(read_video(again)[0], frames)
    other = tmp_path / "other.mp4"
    assert _stylize(tiny_model_dir, source_video, other, "--frames", "9", "--seed", "1") == 0
    assert not np.array_equal(read_video(other)[0], frames)


def test_stylize_restores_portrait_odd_aspect_and_writes_gif(tiny_model_dir, tmp_path, pipeline_calls):
    src = tmp_path / "portrait"
    src.mkdir()
    from PIL import Image

    for i, frame in enumerate(moving_square_video(num_frames=6, height=47, width=31)):
        Image.fromarray(frame).save(src / f"{i:03d}.png")
    out = tmp_path / "out.gif"
    argv = ["stylize", str(src), "-p", "a red square", "-o", str(out), "--model", str(tiny_model_dir)]
    assert main(argv + ["--size", "32x48", "--steps", "3", "--quiet", "--fps", "10"]) == 0
    frames, fps = read_video(out)
    # 6 frames -> 5 (4k+1); generated at 32x48, restored to 31:47 at height 48 -> 32 wide (even)
    assert frames.shape == (5, 48, 32, 3) and fps == pytest.approx(10)
    assert [(c["num_frames"], c["height"], c["width"]) for c in pipeline_calls] == [(5, 48, 32)]


def test_style_preset_sets_prefix_and_skip(tiny_model_dir, source_video, tmp_path, pipeline_calls):
    assert _stylize(tiny_model_dir, source_video, tmp_path / "o.mp4", "--style", "Pixar", "--frames", "5") == 0
    assert _stylize(tiny_model_dir, source_video, tmp_path / "o2.mp4", "--style", "pixar", "--skip", "0", "--frames", "5") == 0
    # Pixar: skip 6 of 20 -> round(6 * 4 / 20) = 1 of 4 steps; a flag wins over the preset
    assert [(c["prompt"], c["num_inference_steps"], c["skip_steps"]) for c in pipeline_calls] == [
        ("Pixar style. a red square moving", 4, 1), ("Pixar style. a red square moving", 4, 0)]


@pytest.mark.parametrize("fmt", ["diffusers", "authors"])
def test_stylize_with_an_adapter(tiny_model_dir, source_video, tmp_path, fmt):
    transformer = random_adapter_transformer(5.0)
    adapter = (
        save_style_adapter(transformer, tmp_path / "adapter")
        if fmt == "diffusers"
        else export_authors_format(transformer, tmp_path / "lora.pth")
    )
    plain, styled = tmp_path / "plain.mp4", tmp_path / "styled.mp4"
    assert _stylize(tiny_model_dir, source_video, plain, "--frames", "5") == 0
    assert _stylize(tiny_model_dir, source_video, styled, "--frames", "5", "--adapter", str(adapter)) == 0
    a, b = read_video(plain)[0].astype(int), read_video(styled)[0].astype(int)
    assert np.abs(a - b).mean() > 0.3  # the tiny random VAE damps every change
    off = tmp_path / "off.mp4"  # scale 0: the adapter has no effect
    assert _stylize(tiny_model_dir, source_video, off, "--frames", "5", "--adapter", str(adapter), "--adapter-scale", "0") == 0
    assert np.array_equal(read_video(off)[0], read_video(plain)[0])


def _wrong_dim_adapter(path):
    state = {}
    for i in range(2):
        for proj in "qkv":
            state[f"module.vace_blocks.{i}.self_attn.{proj}.lora_A.consistency.weight"] = torch.zeros(4, 48)
            state[f"module.vace_blocks.{i}.self_attn.{proj}.lora_B.consistency.weight"] = torch.zeros(48, 4)
    torch.save(state, path)
    return path


def _bad_cases(tmp_path, model, source):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    empty = tmp_path / "empty_frames"
    empty.mkdir()
    not_wan = tmp_path / "not_wan"
    not_wan.mkdir()
    (not_wan / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline", "transformer": ["diffusers", "FluxTransformer2DModel"]}))
    adapter = _wrong_dim_adapter(tmp_path / "wrong_dim.pth")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    return {
        "missing input": ([str(tmp_path / "nope.mp4")], "nope.mp4"),
        "not a video": ([str(text)], "notes.mp4"),
        "no frames": ([str(empty)], "empty_frames"),
        "empty model folder": ([str(source), "--model", str(tmp_path)], "model_index.json"),
        "not a Wan-VACE model": ([str(source), "--model", str(not_wan)], "FluxTransformer2DModel"),
        "adapter that does not fit": ([str(source), "--adapter", str(adapter)], "lora_A"),
        "missing adapter": ([str(source), "--adapter", str(tmp_path / "none.pth")], "none.pth"),
        "skip >= steps": ([str(source), "--skip", "4"], "--skip 4"),
        "negative scale": ([str(source), "--text-scale", "-2"], "--text-scale"),
        "non-finite scale": ([str(source), "--context-scale", "nan"], "--context-scale"),
        "unknown style": ([str(source), "--style", "cubism"], "cubism"),
        "bad size": ([str(source), "--size", "big"], "big"),
        "size not a multiple of 16": ([str(source), "--size", "81x48"], "multiples of 16"),
        "frames not 4k+1": ([str(source), "--frames", "8"], "--frames 8"),
        "lead-in not a multiple of 4": ([str(source), "--lead-in", "6"], "--lead-in 6"),
        "guidance end over 1": ([str(source), "--guidance-end", "1.5"], "--guidance-end 1.5"),
        "deflicker of 1": ([str(source), "--deflicker", "1"], "--deflicker 1"),
        "no samples": ([str(source), "--samples", "0"], "--samples"),
        "unwritable output": ([str(source), "-o", str(blocker / "out.mp4")], "a_file"),
        "output format": ([str(source), "-o", str(tmp_path / "out.avi")], "out.avi"),
    }


def _bad_argv(args, model, out):
    argv = ["stylize", *args[:1], "-p", "a dog", "--model", str(model), "-o", str(out)]
    return argv + ["--size", "80x48", "--steps", "4", "--quiet", *args[1:]]


def test_bad_inputs_exit_2_with_one_line_and_no_output(tiny_model_dir, source_video, tmp_path, capsys):
    out = tmp_path / "out" / "result.mp4"
    for name, (args, named) in _bad_cases(tmp_path, tiny_model_dir, source_video).items():
        code = _exit_code(_bad_argv(args, tiny_model_dir, out))
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2, (name, lines)
        assert len(lines) == 1 and "error" in lines[0] and named in lines[0], (name, lines)
        assert not out.parent.exists() or not list(out.parent.iterdir()), name


@pytest.mark.parametrize("case", ["adapter that does not fit", "negative scale", "not a video"])
def test_bad_inputs_in_a_real_process_print_no_traceback(tiny_model_dir, source_video, tmp_path, case):
    args, named = _bad_cases(tmp_path, tiny_model_dir, source_video)[case]
    out = tmp_path / "result.mp4"
    proc = subprocess.run([sys.executable, "-m", "pickstyle", *_bad_argv(args, tiny_model_dir, out)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and named in proc.stderr
    assert not out.exists()


def test_stylize_bf16_with_model_offload_and_other_schedulers(tiny_model_dir, source_video, tmp_path, pipeline_calls):
    for i, extra in enumerate(
        [
            ["--dtype", "bf16", "--offload", "model", "--device", "cpu"],
            ["--scheduler", "unipc", "--shift", "3"],
            ["--scheduler", "euler", "--guidance", "cfg", "--no-apg", "--null-context", "zero"],
        ]
    ):
        out = tmp_path / f"o{i}.mp4"
        assert _stylize(tiny_model_dir, source_video, out, "--frames", "5", *extra) == 0
        frames, _ = read_video(out)
        assert frames.shape == (5, 48, 80, 3) and frames.std() > 0
    assert [c["sampler"] for c in pipeline_calls] == [("DPMSolverMultistepScheduler", 16.0), ("UniPCMultistepScheduler", 3.0),
                                                      ("FlowMatchEulerDiscreteScheduler", 16.0)]  # fmt: skip
    assert [(c["guidance"], c["apg"], c["null_context"]) for c in pipeline_calls][2] == ("cfg", False, "zero")


def test_eval_many_outputs_with_models_json_and_plot(tmp_path, capsys):
    from PIL import Image

    from pickstyle.testing import build_tiny_clip, build_tiny_dino

    src = tmp_path / "src.mp4"
    video = moving_square_video(num_frames=12, height=48, width=64)
    write_video(src, video, fps=12)
    outs = []
    nine = video[np.round(np.linspace(0, 11, 9)).astype(int)]  # the same times as the source, 9 frames
    for name, frames in [("same", nine), ("dark", (nine * 0.4).astype(np.uint8)), ("flip", nine[:, ::-1])]:
        outs.append(tmp_path / f"{name}.mp4")
        write_video(outs[-1], frames, fps=9)
    clip, dino = build_tiny_clip(tmp_path / "clip"), build_tiny_dino(tmp_path / "dino")
    argv = ["eval", str(src), *map(str, outs), "-p", "anime style. a red square", "--clip", str(clip), "--dino", str(dino)]
    argv += ["--styles", "anime", "pixar", "clay", "--json", str(tmp_path / "s.json"), "--plot", str(tmp_path / "s.png")]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "same.mp4" in text and "flip.mp4" in text and "warp_error" in text and "9 frames" in text
    results = json.loads((tmp_path / "s.json").read_text())
    assert [Path(r["stylised"]).name for r in results] == ["same.mp4", "dark.mp4", "flip.mp4"]
    keys = {"warp_error", "warp_error_source", "flicker", "edge_ssim", "flow_correlation", "clip_score",
            "clip_consistency", "dino_structure", "r_precision_top1", "r_precision_top2", "r_precision_top3"}  # fmt: skip
    for r in results:
        assert keys <= set(r["metrics"]) and r["directions"]["warp_error"] == "lower"
        assert r["directions"]["edge_ssim"] == "higher"
    same, dark, flip = (r["metrics"] for r in results)
    assert same["edge_ssim"] > 0.9 > flip["edge_ssim"] and same["flow_correlation"] > flip["flow_correlation"]
    assert dark["edge_ssim"] > 0.8  # a brightness change keeps the structure
    assert same["r_precision_top3"] == 1.0  # three styles: the true one is always in the top 3
    with Image.open(tmp_path / "s.png") as png:
        assert png.format == "PNG" and png.size[0] > 300


def test_eval_bad_inputs(tmp_path, capsys):
    src = tmp_path / "src.mp4"
    write_video(src, moving_square_video(num_frames=5, height=32, width=32))
    cases = [
        ([str(src), str(tmp_path / "missing.mp4")], "missing.mp4"),
        ([str(src), str(src), "--json", str(tmp_path / "s.txt")], "--json"),
        ([str(src), str(src), "--clip", str(tmp_path / "noclip"), "-p", "anime style. x"], "noclip"),
        ([str(src), str(src), "--styles", "anime"], "--styles"),
    ]
    for args, named in cases:
        assert main(["eval", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and named in err, err
    assert not (tmp_path / "s.txt").exists()


BOOM = "import sys, pickstyle.video.io as v\n" \
       "def boom(*a, **k): raise RuntimeError('Input type (float) and bias type (c10::BFloat16) should be the same')\n" \
       "v.read_video = boom\nfrom pickstyle.cli import main\nsys.exit(main(sys.argv[1:]))\n"  # fmt: skip


@pytest.mark.parametrize("debug", ["", "--debug", "PICKSTYLE_DEBUG=1"])
def test_an_unexpected_failure_in_a_real_process_is_one_line_and_exit_1_unless_debugging(source_video, tmp_path, debug):
    out = tmp_path / "out.mp4"
    argv = ["stylize", str(source_video), "-p", "x", "-o", str(out), "--quiet"] + ([debug] if debug == "--debug" else [])
    env = dict(os.environ, PICKSTYLE_DEBUG="1" if debug.startswith("PICKSTYLE") else "0")
    proc = subprocess.run([sys.executable, "-c", BOOM, *argv], capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and not out.exists()
    last = proc.stderr.strip().splitlines()[-1]
    assert "RuntimeError: Input type (float) and bias type (c10::BFloat16)" in last and "cmd_stylize" in last
    if debug:
        assert "Traceback (most recent call last)" in proc.stderr and "in boom" in proc.stderr
    else:
        assert proc.stderr.strip().count("\n") == 0 and "--debug" in last and "PICKSTYLE_DEBUG=1" in last


def test_unexpected_failures_of_every_kind_name_the_type_message_and_file(tmp_path, monkeypatch, capsys):
    import pickstyle.cli as cli

    for err, named in [(PermissionError(13, "Permission denied", str(tmp_path / "locked.mp4")), "locked.mp4"),
                       (KeyError("transformer"), "'transformer'"), (RuntimeError("line one\nline two"), "line one line two")]:  # fmt: skip
        def fail(args, err=err):
            raise err

        monkeypatch.setattr(cli, "cmd_styles", fail)
        assert main(["styles"]) == 1
        err_text = capsys.readouterr().err.strip()
        assert err_text.count("\n") == 0 and type(err).__name__ in err_text and named in err_text, err_text
    # bad input stays exit 2, even when debugging (then with its traceback)
    def bad(args):
        raise cli.PickStyleError("x.mp4: not a video")

    monkeypatch.setattr(cli, "cmd_styles", bad)
    assert main(["styles", "--debug"]) == 2
    err_text = capsys.readouterr().err
    assert "Traceback" in err_text and err_text.strip().splitlines()[-1] == "pickstyle styles: error: x.mp4: not a video"


def test_seeds_outside_0_to_2_64_are_input_errors(tiny_model_dir, source_video, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    proc = subprocess.run([sys.executable, "-m", "pickstyle", "stylize", str(source_video), "-p", "x", "-o", str(out),
                           "--seed", "99999999999999999999999"], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "--seed" in proc.stderr
    for seed in ["-1", str(2**64)]:
        for argv in (["stylize", str(source_video), "-p", "x", "-o", str(out)], ["clips", str(tmp_path), "-o", str(out)],
                     ["demo", "-o", str(out)], ["make-tiny-model", str(tmp_path / "m")],
                     ["train", "--model", str(tiny_model_dir), "--data", str(tmp_path)]):  # fmt: skip
            assert _exit_code(argv + ["--seed", seed]) == 2
            err = capsys.readouterr().err.strip()
            assert err.count("\n") == 0 and "seed" in err and seed in err, (argv[0], err)
    assert not out.exists() and not (tmp_path / "m").exists()
    # the largest seed is a seed
    assert _stylize(tiny_model_dir, source_video, out, "--frames", "5", "--seed", str(2**64 - 1)) == 0
    assert read_video(out)[0].shape == (5, 48, 80, 3)


def test_the_small_commands_with_only_their_required_arguments(source_video, tmp_path, capsys):
    """make-tiny-model, clips and eval as a new user first types them (stylize, demo, train: elsewhere)."""
    from pickstyle.pipeline.pipeline import load_pipeline

    model = tmp_path / "tiny-model"
    assert main(["make-tiny-model", str(model)]) == 0
    pipe = load_pipeline(str(model), torch.bfloat16)
    assert pipe.transformer.patch_embedding.weight.dtype == torch.bfloat16 and pipe.vae.dtype == torch.float32
    pairs = Path(__file__).parent.parent / "examples" / "pairs"
    preview = tmp_path / "preview.mp4"
    assert main(["clips", str(pairs), "-o", str(preview)]) == 0
    assert read_video(preview)[0].shape == (6 * 33, 240, 2 * 416, 3)  # 6 clips of 33 frames, source | style
    capsys.readouterr()
    assert main(["eval", str(source_video), str(source_video)]) == 0
    table = capsys.readouterr().out
    assert "warp_error" in table and "edge_ssim" in table


def test_stylize_in_bf16_on_a_bf16_folder_with_a_bf16_trained_adapter_and_every_speed_option(
    tiny_model_dir_bf16, source_video, tmp_path
):
    from pickstyle.train.config import TrainConfig
    from pickstyle.train.trainer import train

    pairs = Path(__file__).parent.parent / "examples" / "pairs"
    config = TrainConfig(model=str(tiny_model_dir_bf16), data=[str(pairs)], output=str(tmp_path / "run"), height=32,
                         width=32, frames=5, rank=4, alpha=4.0, max_steps=2, checkpoint_every=0)  # fmt: skip
    adapter = train(config, progress=False).adapter
    outs = {}
    for name, extra in [("plain", []), ("offload, batched", ["--offload", "model", "--batch-guidance"]),
                        ("fp16", ["--dtype", "fp16"])]:  # fmt: skip
        out = tmp_path / f"{name}.mp4"
        dtype = [] if name == "fp16" else ["--dtype", "bf16"]
        assert _stylize(tiny_model_dir_bf16, source_video, out, "--adapter", str(adapter), "--frames", "9", "--samples", "2",
                        "--lead-in", "4", *dtype, *extra) == 0  # fmt: skip
        outs[name] = read_video(out)[0]
        assert outs[name].shape == (9, 48, 80, 3) and outs[name].std() > 0
    assert not np.array_equal(outs["plain"], outs["fp16"])
