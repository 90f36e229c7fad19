"""The bundled toy model (pickstyle-tiny): its settings file, `stylize` without --model,
`pickstyle demo`, and the quality benchmark on one clip and one style."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from pickstyle.cli import main
from pickstyle.errors import PickStyleError
from pickstyle.settings import SETTINGS_FILE, model_settings, style_prompt
from pickstyle.toy.model import DEMO_CLIP, TOY_MODEL, load_toy_pipeline, toy_stylize
from pickstyle.toy.quality import (
    ROWS,
    benchmark_clips,
    criteria,
    psnr,
    run_quality_benchmark,
    run_rows,
    score,
)
from pickstyle.toy.scenes import STYLES
from pickstyle.video.io import read_video


@pytest.fixture(scope="module")
def toy():
    return load_toy_pipeline()


def test_bundled_assets_are_small_and_complete():
    files = [p for p in TOY_MODEL.parent.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 25e6
    settings = model_settings(str(TOY_MODEL))
    assert settings["styles"] == list(STYLES) and settings["size"] == "64x64"
    assert (TOY_MODEL / "adapter" / "pytorch_lora_weights.safetensors").is_file()
    frames, _ = read_video(DEMO_CLIP)
    assert frames.shape[1:] == (64, 64, 3) and len(frames) >= 9 and DEMO_CLIP.stat().st_size <= 2e6


def test_bundled_model_stylises_to_the_right_shape_deterministically(toy):
    pipe, settings = toy
    frames, description = benchmark_clips(1)[0]
    prompt = style_prompt("sepia", description)
    out = toy_stylize(pipe, settings, frames, prompt, seed=3, num_inference_steps=4)
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert np.array_equal(out, toy_stylize(pipe, settings, frames, prompt, seed=3, num_inference_steps=4))
    assert not np.array_equal(out, frames)


def test_the_toy_prompts_fit_the_text_length_with_whole_style_words(toy):
    pipe, settings = toy
    for frames, description in benchmark_clips(20):
        for style in STYLES:
            ids = pipe.tokenizer(style_prompt(style, description))["input_ids"]
            assert len(ids) <= settings["max_sequence_length"], (style, description)
    for style in STYLES:
        assert pipe.tokenizer.tokenize(f"{style} style.")[: len(style.split())] == [f"\u2581{w}" for w in style.split()]


def test_the_adapter_changes_the_output(toy):
    pipe, settings = toy
    frames, description = benchmark_clips(1)[0]
    base, _ = load_toy_pipeline(adapter=None)
    prompt = style_prompt("thermal", description)
    with_adapter = toy_stylize(pipe, settings, frames, prompt, num_inference_steps=4)
    without = toy_stylize(base, settings, frames, prompt, num_inference_steps=4)
    assert np.abs(with_adapter.astype(int) - without).mean() > 1.0


def test_stylize_without_model_uses_the_toy_model_and_its_settings(tmp_path, capsys, pipeline_calls):
    out = tmp_path / "out.mp4"
    assert main(["stylize", str(DEMO_CLIP), "-p", "blueprint style. shapes", "-o", str(out), "--steps", "3",
                 "--frames", "9", "--quiet"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "no --model: using the bundled toy model pickstyle-tiny" in printed
    (call,) = pipeline_calls
    assert (call["num_frames"], call["height"], call["width"], call["sampler"]) == (9, 64, 64, ("FlowMatchEulerDiscreteScheduler", 3.0))
    assert call["max_sequence_length"] == 32 and call["negative_prompt"] == "sepia style."  # blueprint's, in its pickstyle.json
    frames, fps = read_video(out)
    assert frames.shape == (9, 64, 64, 3) and fps == pytest.approx(8)


def test_the_toy_model_in_bf16_with_model_offload_matches_fp32_within_rounding(tmp_path, capsys):
    """A GPU user's `--dtype bf16 --offload model` against the CPU's fp32 default, on the sepia truth."""
    description = DEMO_CLIP.with_suffix(".txt").read_text().strip()
    outs = {}
    for name, extra in [("fp32", []), ("bf16", ["--dtype", "bf16", "--offload", "model"]), ("other seed", ["--seed", "7"])]:
        out = tmp_path / f"{name}.mp4"
        assert main(["stylize", str(DEMO_CLIP), "-p", f"sepia style. {description}", "-o", str(out), "--quiet", *extra]) == 0
        outs[name] = read_video(out)[0]
    source = read_video(DEMO_CLIP, num_frames=len(outs["fp32"]))[0]
    truth = np.stack([STYLES["sepia"](frame) for frame in source])
    change = {name: np.abs(video.astype(float) - outs["fp32"]).mean() for name, video in outs.items()}
    assert 0 < change["bf16"] < 0.4 * change["other seed"], change  # measured: 1.35 against 6.11 grey levels
    assert abs(psnr(outs["bf16"], truth) - psnr(outs["fp32"], truth)) < 0.5  # measured: 20.09 and 20.06 dB


def test_model_settings_errors_name_the_file_and_key(tmp_path):
    assert model_settings(str(tmp_path)) == {}
    path = tmp_path / SETTINGS_FILE
    for text, fragment in [
        ("[1]", "expected a JSON object"),
        ("{bad", "not valid JSON"),
        ('{"stepz": 3}', "unknown key 'stepz'"),
        ('{"steps": "many"}', "steps = 'many' is not int"),
        ('{"text_scale": true}', "text_scale = True is not a number"),
        ('{"adapter": "nope"}', "adapter 'nope' does not exist"),
        ('{"skip": -2}', "skip = -2"),
        ('{"style_settings": {"sepia": 3}}', "style_settings\\['sepia'\\] = 3 is not an object"),
        ('{"style_settings": {"sepia": {"skip": -1}}}', "style_settings\\['sepia'\\].skip = -1"),
        ('{"style_settings": {"sepia": {"skip": 2.5}}}', "style_settings\\['sepia'\\].skip = 2.5 is not int"),
        ('{"style_settings": {"sepia": {"text_scale": "big"}}}', "text_scale = 'big' is not a number"),
        ('{"style_settings": {"sepia": {"shift": 3}}}', "style_settings\\['sepia'\\] has unknown key 'shift'"),
        ('{"style_settings": {"sepia": {"lead_in": 2}}}', "style_settings\\['sepia'\\].lead_in = 2"),
        ('{"style_settings": {"sepia": {"guidance_end": 0}}}', "style_settings\\['sepia'\\].guidance_end = 0"),
        ('{"style_settings": {"sepia": {"negative_prompt": 1}}}', "style_settings\\['sepia'\\].negative_prompt = 1 is not str"),
        ('{"style_settings": {"sepia": {"steps": 0}}}', "style_settings\\['sepia'\\].steps = 0"),
        ('{"style_settings": {"sepia": {"samples": 0}}}', "style_settings\\['sepia'\\].samples = 0"),
        ('{"samples": 1.5}', "samples = 1.5 is not int"),
    ]:
        path.write_text(text)
        with pytest.raises(PickStyleError, match=fragment) as err:
            model_settings(str(tmp_path))
        assert str(path) in str(err.value)
    path.write_text('{"steps": 7, "text_scale": 3}')
    assert model_settings(str(tmp_path)) == {"steps": 7, "text_scale": 3}


def test_flags_override_the_model_settings(private_model_dir, tmp_path, pipeline_calls):
    (private_model_dir / SETTINGS_FILE).write_text(json.dumps({"steps": 3, "size": "32x32", "shift": 2.0, "fps": 5.0}))
    try:
        src = DEMO_CLIP
        out = tmp_path / "a.mp4"
        assert main(["stylize", str(src), "-p", "x", "-o", str(out), "--model", str(private_model_dir), "--frames", "5",
                     "--quiet", "--shift", "4"]) == 0  # fmt: skip
        (call,) = pipeline_calls
        assert (call["num_frames"], call["height"], call["width"], call["num_inference_steps"]) == (5, 32, 32, 3)
        assert call["sampler"] == ("DPMSolverMultistepScheduler", 4.0)
        assert read_video(out)[1] == pytest.approx(5)
    finally:
        (private_model_dir / SETTINGS_FILE).unlink()


def test_a_models_per_style_settings_apply_to_prompts_in_that_style_unless_a_flag_says(private_model_dir, tmp_path, pipeline_calls):
    settings = {"steps": 4, "size": "32x32", "skip": 8, "text_scale": 3,
                "style_settings": {"Night Vision": {"skip": 0, "text_scale": 7}, "sepia": {"skip": 12, "context_scale": 1.5},
                                   "thermal": {"lead_in": 4, "steps": 8}, "sketch": {"guidance_end": 0.5, "samples": 2}, "blueprint": {"negative_prompt": "sepia style."}}}
    (private_model_dir / SETTINGS_FILE).write_text(json.dumps(settings))
    keys = ("num_inference_steps", "skip_steps", "text_guidance_scale", "context_guidance_scale", "guidance_end", "num_samples",
            "lead_in_frames", "negative_prompt")
    # expected, in the order of `keys`; defaults where neither the file nor a flag says: w_c 4, guidance_end 1, 1 sample, no lead-in, Wan's null text
    for prompt, extra, expected in [
        ("night vision style. a ring", [], (4, 0, 7, 4, 1, 1, 0, None)),
        ("Sepia style. a ring", [], (4, 2, 3, 1.5, 1, 1, 0, None)),
        ("sketch style. a ring", [], (4, 2, 3, 4, 0.5, 2, 0, None)),
        ("sketch style. a ring", ["--samples", "1"], (4, 2, 3, 4, 0.5, 1, 0, None)),
        ("sepia style. a ring", ["--samples", "3"], (4, 2, 3, 1.5, 1, 3, 0, None)),
        ("sketch style. a ring", ["--guidance-end", "1"], (4, 2, 3, 4, 1, 2, 0, None)),
        ("sepia style. a ring", ["--skip", "1", "--context-scale", "2"], (4, 1, 3, 2, 1, 1, 0, None)),
        ("thermal style. a ring", [], (8, 3, 3, 4, 1, 1, 4, None)),  # its own 8 steps: skip 8 of 20 is 3 of 8
        ("thermal style. a ring", ["--lead-in", "0", "--steps", "4"], (4, 2, 3, 4, 1, 1, 0, None)),
        ("sepia style. a ring", ["--style", "clay"], (4, 0, 3, 4, 1, 1, 0, None)),  # the prompt becomes "Clay style. ..."
        ("night vision style. a ring", ["--text-scale", "2"], (4, 0, 2, 4, 1, 1, 0, None)),
        ("blueprint style. a ring", [], (4, 2, 3, 4, 1, 1, 0, "sepia style.")),
        ("blueprint style. a ring", ["--negative-prompt", "blur"], (4, 2, 3, 4, 1, 1, 0, "blur")),
    ]:  # fmt: skip
        argv = ["stylize", str(DEMO_CLIP), "-p", prompt, "-o", str(tmp_path / "a.mp4"), "--model", str(private_model_dir),
                "--frames", "5", "--quiet", *extra]  # fmt: skip
        assert main(argv) == 0
        call = pipeline_calls[-1]
        assert tuple(call[k] for k in keys) == expected, (prompt, extra)


def test_demo_writes_a_labelled_side_by_side_video(tmp_path, capsys):
    out = tmp_path / "demo.mp4"
    assert main(["demo", "-o", str(out), "--styles", "sepia", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    frames, _ = read_video(out)
    source, _ = read_video(DEMO_CLIP)
    assert frames.shape == (len(source), 18 + 3 * 64, 2 * 3 * 64, 3)
    # the left panel is the source, upscaled 3x; the right one is not
    left, right = frames[:, 18:, : 3 * 64].astype(int), frames[:, 18:, 3 * 64 :].astype(int)
    assert np.abs(left - source.repeat(3, 1).repeat(3, 2)).mean() < 6
    assert np.abs(right - left).mean() > 10


def test_demo_rejects_unknown_styles(capsys):
    assert main(["demo", "--styles", "anime"]) == 2
    assert "style 'anime': the toy model knows sketch" in capsys.readouterr().err


def test_score_and_criteria_on_constructed_videos():
    frames, _ = benchmark_clips(1)[0]
    truths = {name: np.stack([fn(f) for f in frames]) for name, fn in STYLES.items()}
    perfect = score(truths["sepia"], frames, truths, "sepia")
    assert perfect["psnr"] == pytest.approx(100.0) and perfect["ssim"] == pytest.approx(1.0)
    assert perfect["own_style_closest"] == 1.0
    assert score(truths["thermal"], frames, truths, "sepia")["own_style_closest"] == 0.0
    assert psnr(frames, frames.astype(np.int16) + 10) == pytest.approx(20 * np.log10(255 / 10), abs=0.01)
    floor = {"psnr": 10.0, "warp_error": 0.01, "own_style_closest": 0.0}
    results = {
        "source unchanged": {"sepia": floor},
        "ground truth": {"sepia": {"psnr": 100.0, "warp_error": 0.02, "own_style_closest": 1.0}},
        "pickstyle": {"sepia": {"psnr": 12.5, "warp_error": 0.031, "own_style_closest": 1.0}},
    }
    checks = {what.split(": ")[1]: passed for what, passed, _ in criteria(results, ["sepia"])}
    assert checks == {"PSNR beats the source by >= 3 dB": False, "closest to its own style's truth": True,
                      "warping error <= 1.5x the ground truth's": False}  # fmt: skip


def test_vae_round_trip_after_a_lead_in_is_the_tail_of_the_mirrored_clip(tiny_components):
    from pickstyle.pipeline.pipeline import PickStylePipeline
    from pickstyle.toy.model import vae_round_trip

    from .conftest import moving_square_video

    pipe = PickStylePipeline(**tiny_components)
    video = moving_square_video()
    plain, led = vae_round_trip(pipe, video), vae_round_trip(pipe, video, lead_in=4)
    mirrored = vae_round_trip(pipe, np.concatenate([video[[4, 3, 2, 1]], video]))
    assert plain.shape == led.shape == video.shape
    np.testing.assert_array_equal(led, mirrored[4:])
    assert not np.array_equal(led, plain)  # the causal VAE sees the frames before


def test_quality_benchmark_runs_on_one_clip_and_one_style(tmp_path, capsys):
    args = SimpleNamespace(clips=1, styles=["night vision"], rows=["pickstyle", "truth through the vae"], steps=4,
                           seed=0, out=str(tmp_path / "bench"), quiet=True)  # fmt: skip
    record = run_quality_benchmark(args)
    assert list(record["results"]) == ["source unchanged", "ground truth", "truth through the vae", "pickstyle"]
    assert record["results"]["ground truth"]["night vision"]["psnr"] == pytest.approx(100.0)
    # the VAE loses detail but keeps the style: far above the source, far below exact
    via_vae = record["results"]["truth through the vae"]["night vision"]
    assert 18 < via_vae["psnr"] < 60 and via_vae["own_style_closest"] == 1.0
    saved = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert saved["results"] == record["results"] and len(saved["criteria"]) == 3
    assert (tmp_path / "bench" / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| pickstyle |" in (tmp_path / "bench" / "results.md").read_text()


def _sepia_rows_at(model_dir, names, settings: dict) -> dict:
    """run_rows for the rows `names`, sepia only, on one 5-frame 32x32 clip, with `settings` as the
    model folder's pickstyle.json for the run (removed afterwards)."""
    (model_dir / SETTINGS_FILE).write_text(json.dumps(settings))
    try:
        rows = [row for row in ROWS if row.name in names]
        return run_rows(rows, ["sepia"], benchmark_clips(1, frames=5, size=32), progress=False, model=model_dir)[0]
    finally:
        (model_dir / SETTINGS_FILE).unlink()


def test_the_deflicker_row_scores_the_pickstyle_rows_output_deflickered_without_stylising_it_again(private_model_dir, monkeypatch):
    import pickstyle.toy.model
    from pickstyle.video.postprocess import deflicker

    calls = []
    monkeypatch.setattr(pickstyle.toy.model, "toy_stylize", lambda *args, **kw: calls.append(1) or toy_stylize(*args, **kw))
    settings = {"steps": 4, "skip": 0, "text_scale": 3.0, "context_scale": 1.0}
    rows = _sepia_rows_at(private_model_dir, ("pickstyle", "deflicker 0.5"), settings)
    assert len(calls) == 1  # one clip, one style: the deflicker row reuses the pickstyle row's output
    ((frames, description),) = benchmark_clips(1, frames=5, size=32)
    (private_model_dir / SETTINGS_FILE).write_text(json.dumps(settings))
    try:
        pipe, model_wide = load_toy_pipeline(private_model_dir)
    finally:
        (private_model_dir / SETTINGS_FILE).unlink()
    output = toy_stylize(pipe, model_wide, frames, style_prompt("sepia", description), 2025, num_inference_steps=4)
    truths = {name: np.stack([fn(f) for f in frames]) for name, fn in STYLES.items()}
    assert rows["pickstyle"]["sepia"] == pytest.approx(score(output, frames, truths, "sepia"), nan_ok=True)
    assert rows["deflicker 0.5"]["sepia"] == pytest.approx(score(deflicker(output, frames, 0.5), frames, truths, "sepia"), nan_ok=True)


def test_the_one_setting_row_uses_the_model_wide_settings_instead_of_the_styles(private_model_dir):
    model_wide = {"steps": 4, "skip": 0, "text_scale": 3.0, "context_scale": 2.0}

    def run(settings):
        return _sepia_rows_at(private_model_dir, ("pickstyle", "one setting for all"), settings)

    per_style = run({**model_wide, "style_settings": {"sepia": {"skip": 8, "text_scale": 1.0}}})
    assert per_style["pickstyle"]["sepia"] == run({**model_wide, "skip": 8, "text_scale": 1.0})["pickstyle"]["sepia"]
    assert per_style["one setting for all"]["sepia"] == run(model_wide)["pickstyle"]["sepia"]
    assert per_style["pickstyle"]["sepia"]["psnr"] != per_style["one setting for all"]["sepia"]["psnr"]


def test_a_styles_negative_prompt_is_its_null_text(private_model_dir):
    model_wide = {"steps": 4, "skip": 0, "text_scale": 3.0, "context_scale": 1.0}

    def run(settings):
        return _sepia_rows_at(private_model_dir, ("pickstyle",), settings)["pickstyle"]["sepia"]

    per_style = run({**model_wide, "style_settings": {"sepia": {"negative_prompt": "blueprint style."}}})
    assert per_style == run({**model_wide, "negative_prompt": "blueprint style."})
    assert per_style["psnr"] != run(model_wide)["psnr"]


def test_a_styles_steps_are_its_sampling_steps_in_the_benchmark(private_model_dir):
    model_wide = {"steps": 4, "skip": 0, "text_scale": 3.0, "context_scale": 1.0}

    def run(settings):
        return _sepia_rows_at(private_model_dir, ("pickstyle",), settings)["pickstyle"]["sepia"]

    per_style = run({**model_wide, "style_settings": {"sepia": {"steps": 2}}})
    assert per_style == run({**model_wide, "steps": 2})
    assert per_style["psnr"] != run(model_wide)["psnr"]


def test_the_no_lead_in_row_runs_the_styles_settings_without_their_lead_in(private_model_dir):
    def run(lead_in):
        settings = {"steps": 4, "skip": 0, "text_scale": 3.0, "context_scale": 2.0, "style_settings": {"sepia": {"lead_in": lead_in}}}
        return _sepia_rows_at(private_model_dir, ("pickstyle", "no lead-in"), settings)

    led, plain = run(4), run(0)
    assert led["no lead-in"]["sepia"] == plain["pickstyle"]["sepia"] == plain["no lead-in"]["sepia"]
    assert led["pickstyle"]["sepia"]["psnr"] != plain["pickstyle"]["sepia"]["psnr"]


def test_a_styles_samples_are_averaged_and_the_one_sample_row_takes_one(private_model_dir):
    def run(samples):
        settings = {"steps": 4, "skip": 0, "text_scale": 3.0, "context_scale": 1.0, "style_settings": {"sepia": {"samples": samples}}}
        return _sepia_rows_at(private_model_dir, ("pickstyle", "one sample"), settings)

    two, one = run(2), run(1)
    assert two["one sample"]["sepia"] == one["pickstyle"]["sepia"] == one["one sample"]["sepia"]
    assert two["pickstyle"]["sepia"]["psnr"] != one["pickstyle"]["sepia"]["psnr"]


def test_the_context_guidance_rows_set_w_c_to_one_and_a_half_with_either_null(private_model_dir):
    def run(context_scale):
        settings = {"steps": 4, "skip": 0, "text_scale": 3.0, "context_scale": context_scale}
        return _sepia_rows_at(private_model_dir, ("pickstyle", "context guidance 1.5", "context 1.5, zero null"), settings)

    off, on = run(1.0), run(1.5)
    assert off["context guidance 1.5"]["sepia"] == on["pickstyle"]["sepia"] == on["context guidance 1.5"]["sepia"]
    assert off["pickstyle"]["sepia"]["psnr"] != off["context guidance 1.5"]["sepia"]["psnr"]
    assert off["context 1.5, zero null"]["sepia"]["psnr"] != off["context guidance 1.5"]["sepia"]["psnr"]


def test_bench_rejects_unknown_rows(capsys):
    assert main(["bench", "quality", "--rows", "best"]) == 2
    assert "--rows 'best': not a row" in capsys.readouterr().err
