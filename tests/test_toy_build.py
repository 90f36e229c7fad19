"""toy/build.py's training machinery: the online clips of the base and the learning-rate schedule."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "toy"))
import build  # noqa: E402

from pickstyle.toy.scenes import luma  # noqa: E402


def test_online_clips_are_deterministic_plain_or_styled_with_a_mask_of_a_sixteenth_to_a_quarter():
    clips = build.OnlineBaseClips()
    for n in range(6):
        frames, gray, mask, caption = clips[n]
        again = clips[n]
        assert np.array_equal(frames, again[0]) and torch.equal(mask, again[2]) and caption == again[3]
        assert frames.shape == (build.FRAMES, build.SIZE, build.SIZE, 3) and frames.dtype == np.uint8
        np.testing.assert_array_equal(gray[..., 0], np.rint(luma(frames)).astype(np.uint8))
        area = mask[0, 0].mean().item()
        assert 1 / 16 - 1e-9 <= area <= 1 / 4 + 1e-9 and torch.equal(mask[:, 0], mask[:, -1])
        assert caption.split(" style. ")[0] in build.STYLES if n % 3 == 2 else " style. " not in caption
    assert not np.array_equal(clips[0][0], clips[1][0])


@pytest.fixture
def fake_clock(monkeypatch):
    """build's clock, advancing 10 ms at every reading: the loops' lengths no longer hang on the machine's speed."""
    from types import SimpleNamespace

    now = [0.0]

    def time():
        now[0] += 0.01
        return now[0]

    monkeypatch.setattr(build, "time", SimpleNamespace(time=time))
    return now


def _run_loop(folder: Path, **kwargs) -> tuple[list, list]:
    """_train_loop on one quadratic parameter, a log line per step: (steps seen, learning rates)."""
    weight = torch.nn.Parameter(torch.ones(3))
    seen = []

    def step_loss(step):
        seen.append(step)
        return (weight**2).sum(), ""

    log = folder / "train.log"
    before = len(log.read_text().splitlines()) if log.is_file() else 0
    build._train_loop(folder, [weight], lambda f: None, step_loss, lr=1e-2, weight_decay=0.0, log_every=1, **kwargs)
    lines = [line for line in log.read_text().splitlines()[before:] if line.startswith("step ")]
    return seen, [float(line.split(" lr ")[1].split()[0]) for line in lines]


def test_train_loop_warms_up_without_adam_moments_and_cools_down_to_zero(tmp_path, fake_clock):
    seen, lrs = _run_loop(tmp_path, minutes=5.0, cooldown=80)
    assert seen == list(range(80)) and len(lrs) == 80  # the cooldown ends the call
    assert lrs[0] == pytest.approx(1e-2 / build.WARMUP, rel=1e-2) and lrs[1] == pytest.approx(2e-2 / build.WARMUP * 79 / 80, rel=1e-2)
    assert lrs[79] == pytest.approx(1e-2 / 80, rel=1e-2)
    assert json.loads((tmp_path / "state.json").read_text()) == {"step": 80, "seconds": pytest.approx(fake_clock[0] - 0.01, abs=0.05), "cooldown": [0, 80]}
    assert (tmp_path / "optimizer.pt").is_file()
    seen2, lrs2 = _run_loop(tmp_path, minutes=5.0, cooldown=20)  # resumed with its moments: no warm-up
    assert seen2 == list(range(80, 100)) and lrs2[0] == pytest.approx(1e-2, rel=1e-2)


def test_train_loop_decay_fixes_its_length_from_the_speed_and_replaces_a_finished_cooldown(tmp_path, fake_clock):
    (tmp_path / "state.json").write_text(json.dumps({"step": 500, "seconds": 1.0, "cooldown": [400, 100]}))
    seen, _ = _run_loop(tmp_path, minutes=0.2, decay=True)
    state = json.loads((tmp_path / "state.json").read_text())
    first, length = state["cooldown"]
    assert seen[0] == 500 and first == 560 and length > 0  # the finished cooldown did not stop it
    assert state["step"] == first + length  # the rate reached 0 as the minutes ran out (measured: 560 + 236)
    assert "decay: the learning rate falls linearly to 0" in (tmp_path / "train.log").read_text()


def test_tune_chooses_per_style_the_most_own_style_picks_then_the_warp_bar_then_psnr():
    def row(skip, psnr, own, warp=(3.0, 3.0), styles=("a", "b")):
        return {"skip": skip, "psnr": dict(zip(styles, psnr)), "own": dict(zip(styles, own)), "warp_vs_truth": dict(zip(styles, warp))}

    grid = [row(0, (20.0, 10.0), (0.5, 1.0)), row(2, (15.0, 12.0), (1.0, 1.0)), row(4, (16.0, 9.0), (1.0, 0.25))]
    choice = build.choose_settings(grid, ("skip",))
    assert choice["chosen"] == {"a": {"skip": 4}, "b": {"skip": 2}}
    assert choice["default"] == {"skip": 0}  # mean PSNR 15.0 against 13.5 and 12.5
    # within the warp bar beats a better PSNR outside it; fewer own-style picks lose to both
    grid.append(row(6, (11.0, 11.0), (1.0, 1.0), (3.0, build.WARP_BAR)))
    grid.append(row(8, (12.0, 30.0), (0.75, 0.75), (1.0, 1.0)))
    choice = build.choose_settings(grid, ("skip",))
    assert choice["chosen"] == {"a": {"skip": 4}, "b": {"skip": 6}} and choice["default"] == {"skip": 8}


def _refine_with(tmp_path, monkeypatch, grid, rate):
    """tmp_path as toy/work with a tune.json of `grid` (rated on 4 clips), `rate(setting, styles)` as
    `_rater`'s function and "weights-a" as the rating id, for `build.refine`."""
    (tmp_path / "tune.json").write_text(json.dumps({"clips": 4, "steps": 20, "grid": grid, **build.choose_settings(grid, build.RATED_KEYS)}))
    monkeypatch.setattr(build, "WORK", tmp_path)
    monkeypatch.setattr(build, "_rater", lambda clips, steps, adapter: rate)
    monkeypatch.setattr(build, "rating_id", lambda adapter: "weights-a")


def test_refine_rates_each_styles_shortlist_on_more_clips_and_resumes(tmp_path, monkeypatch):
    styles = tuple(build.STYLES)
    settings = [{"skip": skip, "text_scale": wt, "context_scale": 1.0, "lead_in": 0} for skip in (0, 2) for wt in (1.0, 2.0, 3.0)]
    # rows of a tune.json older than guidance_end lack it: they were guided throughout
    # on the tune's clips PSNR rises with w_t; on more clips skip 2 picks every style's own on all
    grid = [dict(s, psnr={st: s["text_scale"] for st in styles}, own=dict.fromkeys(styles, 0.75), warp_vs_truth=dict.fromkeys(styles, 2.0))
            for s in settings]  # fmt: skip
    calls = []

    def rate(setting, rated_styles):
        calls.append((rated_styles, setting["skip"], setting["text_scale"]))
        own = 1.0 if setting["skip"] == 2 else 0.5
        return dict(setting, psnr=dict.fromkeys(rated_styles, 10.0), own=dict.fromkeys(rated_styles, own), warp_vs_truth=dict.fromkeys(rated_styles, 2.0))

    _refine_with(tmp_path, monkeypatch, grid, rate)
    result = build.refine(clips=12, top=2, interval_top=0, null_top=0, steps_top=0, samples_top=0)
    # the shortlist: per style the two best rows on 4 clips (w_t 3 at skips 0 and 2), one style each
    assert sorted(calls) == sorted(((st,), skip, 3.0) for st in styles for skip in (0, 2))
    assert all(len(row["psnr"]) == 1 for row in result["refine"]["rows"]) and len(result["refine"]["rows"]) == 2 * len(styles)
    assert result["chosen"] == dict.fromkeys(styles, {"skip": 2, "text_scale": 3.0, "context_scale": 1.0, "lead_in": 0, "guidance_end": 1.0, "negative_prompt": "", "steps": 20, "samples": 1})
    assert result["default"] == build.choose_settings(grid, build.RATED_KEYS)["default"]  # from the full grid
    assert json.loads((tmp_path / "tune.json").read_text()) == result
    calls.clear()
    assert build.refine(clips=12, top=2, interval_top=0, null_top=0, steps_top=0, samples_top=0) == result and calls == []  # resumed: nothing rated again
    assert build.refine(clips=12, top=1, interval_top=0, null_top=0, steps_top=0, samples_top=0)["chosen"] == result["chosen"] and calls == []  # skip 2 is off the shortlist now, kept
    build.refine(clips=16, top=2, interval_top=0, null_top=0, steps_top=0, samples_top=0)
    assert len(calls) == 2 * len(styles)  # more clips: rated afresh
    calls.clear()
    monkeypatch.setattr(build, "rating_id", lambda adapter: "weights-b")
    assert build.refine(clips=16, top=2, interval_top=0, null_top=0, steps_top=0, samples_top=0)["refine"]["weights"] == "weights-b"
    assert len(calls) == 2 * len(styles)  # other weights: rated afresh
    calls.clear()
    monkeypatch.setitem(build.TOY_SETTINGS, "shift", 12.0)
    assert build.refine(clips=16, top=2, interval_top=0, null_top=0, steps_top=0, samples_top=0)["refine"]["sampler"] == "euler shift 12"
    assert len(calls) == 2 * len(styles)  # another sampler: rated afresh


def test_refine_then_rates_each_styles_best_guided_settings_on_part_of_the_steps(tmp_path, monkeypatch):
    styles = tuple(build.STYLES)
    settings = [{"skip": 0, "text_scale": wt, "context_scale": 1.0, "lead_in": 0, "guidance_end": 1.0} for wt in (1.0, 2.0, 3.0)]
    grid = [dict(s, psnr={st: 20 - s["text_scale"] for st in styles}, own=dict.fromkeys(styles, 1.0), warp_vs_truth=dict.fromkeys(styles, 2.0))
            for s in settings]  # fmt: skip
    calls = []

    def rate(setting, rated_styles):
        calls.append((rated_styles, setting["text_scale"], setting["guidance_end"]))
        # no guidance (w_t 1) has the best PSNR, a shorter interval costs 0.5 dB, but guided on the first half w_t 3 meets the warping bar
        warp = 1.2 if (setting["text_scale"], setting["guidance_end"]) == (3.0, 0.5) else 2.0
        psnr = 20 - setting["text_scale"] - (setting["guidance_end"] < 1) / 2
        return dict(setting, psnr=dict.fromkeys(rated_styles, psnr), own=dict.fromkeys(rated_styles, 1.0), warp_vs_truth=dict.fromkeys(rated_styles, warp))

    _refine_with(tmp_path, monkeypatch, grid, rate)
    result = build.refine(clips=12, top=3, interval_top=1, null_top=0, steps_top=0, samples_top=0)
    # the shortlist (3 per style), then the best guided one of it (w_t 2: PSNR 18 against 17) at each guidance end
    intervals = [((st,), 2.0, end) for st in styles for end in build.REFINE_GUIDANCE_ENDS]
    assert calls == [((st,), wt, 1.0) for st in styles for wt in (1.0, 2.0, 3.0)] + intervals
    assert result["chosen"] == dict.fromkeys(styles, {"skip": 0, "text_scale": 1.0, "context_scale": 1.0, "lead_in": 0, "guidance_end": 1.0, "negative_prompt": "", "steps": 20, "samples": 1})
    calls.clear()
    result = build.refine(clips=12, top=3, interval_top=2, null_top=0, steps_top=0, samples_top=0)  # and w_t 3, which guided on the first half meets the bar
    assert calls == [((st,), 3.0, end) for st in styles for end in build.REFINE_GUIDANCE_ENDS]
    assert result["chosen"] == dict.fromkeys(styles, {"skip": 0, "text_scale": 3.0, "context_scale": 1.0, "lead_in": 0, "guidance_end": 0.5, "negative_prompt": "", "steps": 20, "samples": 1})
    calls.clear()
    assert build.refine(clips=12, top=3, interval_top=2, null_top=0, steps_top=0, samples_top=0) == result and calls == []  # resumed: nothing rated again
    assert build.refine(clips=12, top=3, interval_top=0, null_top=0, steps_top=0, samples_top=0)["chosen"] == result["chosen"] and calls == []  # off the list now, kept
    # a setting tried by hand (work/probes.json) on the same clips, weights and sampler is a candidate too
    probe = {"skip": 0, "text_scale": 5.0, "context_scale": 1.0, "lead_in": 4, "guidance_end": 0.35, "negative_prompt": "sepia style."}
    probes = {"clips": 12, "steps": 20, "weights": "weights-a", "sampler": build.rating_sampler(),
              "rows": [dict(probe, psnr={styles[0]: 30.0}, own={styles[0]: 1.0}, warp_vs_truth={styles[0]: 1.0})]}  # fmt: skip
    (tmp_path / "probes.json").write_text(json.dumps(dict(probes, weights="weights-b")))
    assert build.refine(clips=12, top=3, interval_top=2, null_top=0, steps_top=0, samples_top=0)["chosen"] == result["chosen"]  # other weights: not a candidate
    (tmp_path / "probes.json").write_text(json.dumps(probes))
    assert build.refine(clips=12, top=3, interval_top=2, null_top=0, steps_top=0, samples_top=0)["chosen"] == dict(result["chosen"], **{styles[0]: dict(probe, steps=20, samples=1)}) and calls == []


def test_refine_last_rates_each_styles_best_text_guided_settings_with_the_style_it_is_confused_with_as_the_null_text(tmp_path, monkeypatch):
    styles = tuple(build.STYLES)
    confused = {st: styles[(n + 1) % len(styles)] for n, st in enumerate(styles)}
    settings = [{"skip": 0, "text_scale": wt, "context_scale": 1.0, "lead_in": 0} for wt in (1.0, 2.0, 3.0)]
    grid = [dict(s, psnr=dict.fromkeys(styles, 10.0), own=dict.fromkeys(styles, 1.0), warp_vs_truth=dict.fromkeys(styles, 2.0)) for s in settings]
    calls, with_confusion = [], [False]

    def rate(setting, rated_styles):
        (st,) = rated_styles
        calls.append((st, setting["text_scale"], setting["negative_prompt"]))
        # PSNR falls with w_t; the confused style's name as the null text gains 3 dB, another style's name 1 dB
        psnr = 20 - setting["text_scale"] + {"": 0, f"{confused[st]} style.": 3}.get(setting["negative_prompt"], 1)
        row = dict(setting, psnr={st: psnr}, own={st: 1.0}, warp_vs_truth={st: 2.0})
        return dict(row, confused_with={st: confused[st]}) if with_confusion[0] else row  # rows rated before confused_with lack it

    _refine_with(tmp_path, monkeypatch, grid, rate)
    build.refine(clips=12, top=3, interval_top=0, null_top=0, steps_top=0, samples_top=0)
    calls.clear()
    with_confusion[0] = True
    result = build.refine(clips=12, top=3, interval_top=0, null_top=1, steps_top=0, samples_top=0)
    # the best setting guided by text (w_t 2) is rated again for the style it is confused with, then with it as the null text
    assert calls == [call for st in styles for call in ((st, 2.0, ""), (st, 2.0, f"{confused[st]} style."))]
    assert result["chosen"] == {st: {"skip": 0, "text_scale": 2.0, "context_scale": 1.0, "lead_in": 0, "guidance_end": 1.0,
                                     "negative_prompt": f"{confused[st]} style.", "steps": 20, "samples": 1} for st in styles}  # fmt: skip
    assert result["refine"]["null_top"] == 1
    calls.clear()
    assert build.refine(clips=12, top=3, interval_top=0, null_top=1, steps_top=0, samples_top=0) == result and calls == []  # resumed: nothing rated again
    build.refine(clips=12, top=3, interval_top=0, null_top=2, steps_top=0, samples_top=0)  # the next one (w_t 3) too; a row with a null text is not a base for another
    assert calls == [(st, 3.0, f"{confused[st]} style.") for st in styles]


def test_refine_last_rates_each_styles_best_settings_at_fewer_steps(tmp_path, monkeypatch):
    styles = tuple(build.STYLES)
    settings = [{"skip": 0, "text_scale": wt, "context_scale": 1.0, "lead_in": 0} for wt in (1.0, 2.0)]  # rows older than steps: 20
    grid = [dict(s, psnr=dict.fromkeys(styles, 10 + s["text_scale"]), own=dict.fromkeys(styles, 1.0), warp_vs_truth=dict.fromkeys(styles, 2.0))
            for s in settings]  # fmt: skip
    calls = []

    def rate(setting, rated_styles):
        (st,) = rated_styles
        calls.append((st, setting["text_scale"], setting["steps"]))
        # fewer steps cost 0.2 dB, but at 4 steps the warping error meets the bar
        psnr = 10 + setting["text_scale"] - 0.2 * (setting["steps"] < 20)
        return dict(setting, psnr={st: psnr}, own={st: 1.0}, warp_vs_truth={st: 1.2 if setting["steps"] == 4 else 2.0})

    _refine_with(tmp_path, monkeypatch, grid, rate)
    result = build.refine(clips=12, top=2, interval_top=0, null_top=0, steps_top=1, samples_top=0)
    # the shortlist, then the best of it (w_t 2) at each of REFINE_STEPS
    assert calls == [(st, wt, 20) for st in styles for wt in (2.0, 1.0)] + [(st, 2.0, n) for st in styles for n in build.REFINE_STEPS]
    assert 4 in build.REFINE_STEPS and result["refine"]["steps_top"] == 1
    assert result["chosen"] == dict.fromkeys(styles, {"skip": 0, "text_scale": 2.0, "context_scale": 1.0, "lead_in": 0, "guidance_end": 1.0,
                                                      "negative_prompt": "", "steps": 4, "samples": 1})  # fmt: skip
    calls.clear()
    assert build.refine(clips=12, top=2, interval_top=0, null_top=0, steps_top=1, samples_top=0) == result and calls == []  # resumed: nothing rated again
    build.refine(clips=12, top=2, interval_top=0, null_top=0, steps_top=2, samples_top=0)  # the next at 20 steps (w_t 1); a row at fewer steps is not a base
    assert calls == [(st, 1.0, n) for st in styles for n in build.REFINE_STEPS]


def test_refine_last_rates_each_styles_best_setting_as_the_mean_of_more_samples(tmp_path, monkeypatch):
    styles = tuple(build.STYLES)
    settings = [{"skip": 0, "text_scale": wt, "context_scale": 1.0, "lead_in": 0} for wt in (1.0, 2.0)]  # rows older than samples: 1
    grid = [dict(s, psnr=dict.fromkeys(styles, 10 + s["text_scale"]), own=dict.fromkeys(styles, 1.0), warp_vs_truth=dict.fromkeys(styles, 2.0))
            for s in settings]  # fmt: skip
    calls = []

    def rate(setting, rated_styles):
        (st,) = rated_styles
        calls.append((st, setting["text_scale"], setting["samples"]))
        # the first style's warping error meets the bar at 4 samples; the second gains 0.2 dB at 2 and 4 (less than
        # SAMPLES_COST_DB per doubling), the third 0.5 dB at 2 and 0.6 at 4; the others lose 0.3 dB
        meets = st == styles[0] and setting["samples"] == 4
        gain = {styles[0]: 0.0, styles[1]: 0.2, styles[2]: 0.5 + 0.1 * (setting["samples"] == 4)}.get(st, -0.3)
        psnr = 10 + setting["text_scale"] + gain * (setting["samples"] > 1)
        return dict(setting, psnr={st: psnr}, own={st: 1.0}, warp_vs_truth={st: 1.4 if meets else 2.0})

    _refine_with(tmp_path, monkeypatch, grid, rate)
    result = build.refine(clips=12, top=2, interval_top=0, null_top=0, steps_top=0, samples_top=1)
    # the shortlist, then the best of it (w_t 2) as the mean of each of REFINE_SAMPLES samples
    assert calls == [(st, wt, 1) for st in styles for wt in (2.0, 1.0)] + [(st, 2.0, n) for st in styles for n in build.REFINE_SAMPLES]
    assert 4 in build.REFINE_SAMPLES and result["refine"]["samples_top"] == 1
    assert build.SAMPLES_COST_DB == 0.3
    assert {st: c["samples"] for st, c in result["chosen"].items()} == {st: {styles[0]: 4, styles[2]: 2}.get(st, 1) for st in styles}
    calls.clear()
    assert build.refine(clips=12, top=2, interval_top=0, null_top=0, steps_top=0, samples_top=1) == result and calls == []  # resumed


def test_rater_scores_the_bundled_model_and_names_the_style_each_output_is_nearest_after_its_own(tmp_path, monkeypatch):
    from pickstyle.pipeline.schedulers import make_scheduler
    from pickstyle.settings import style_prompt
    from pickstyle.toy.model import load_toy_pipeline, toy_stylize
    from pickstyle.toy.quality import psnr
    from pickstyle.toy.scenes import STYLES, make_scene_clip

    monkeypatch.setattr(build, "WORK", tmp_path)  # a fresh clone: the bundled base and adapter
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "state.json").write_text("{}")
    setting = {"skip": 0, "text_scale": 3.0, "context_scale": 1.0, "lead_in": 0, "guidance_end": 0.5, "negative_prompt": "sepia style.", "steps": 3}
    row = build._rater(2, 2, build.rated_adapter())(setting, ("sketch", "blueprint"))  # the row's own 3 steps, not the rater's 2
    assert {k: row[k] for k in setting} == setting and set(row["confused_with"]) == {"sketch", "blueprint"}
    # the reference: the same clips and setting stylised here, their PSNR against every style's truth
    pipe, _ = load_toy_pipeline(build.base_model(), adapter=str(build.rated_adapter()))
    pipe.scheduler = make_scheduler(build.TOY_SETTINGS["scheduler"], build.TOY_SETTINGS["shift"])
    clips = [make_scene_clip(np.random.default_rng(build.TUNE_SEED + i), build.FRAMES, build.SIZE, build.SIZE) for i in range(2)]
    for style in ("sketch", "blueprint"):
        near = []  # per clip: {style: dB}
        for frames, text in clips:
            out = toy_stylize(pipe, {**build.TOY_SETTINGS, "style_settings": {}, **setting}, frames, style_prompt(style, text))
            near.append({name: psnr(out, np.stack([fn(f) for f in frames])) for name, fn in STYLES.items()})
        assert row["psnr"][style] == round(float(np.mean([n[style] for n in near])), 2)
        assert row["own"][style] == np.mean([max(n, key=n.get) == style for n in near])
        _, other = min((n[style] - max(v for k, v in n.items() if k != style), max((k for k in n if k != style), key=n.get)) for n in near)
        assert row["confused_with"][style] == other  # nearest on the clip where the own style leads least


def test_tune_resumes_only_rows_rated_with_the_same_weights_and_sampler(tmp_path, monkeypatch):
    calls = []

    def fake_rater(clips, steps, adapter):
        def rate(setting, rated_styles=tuple(build.STYLES)):
            calls.append(setting)
            return dict(setting, psnr=dict.fromkeys(rated_styles, setting["text_scale"]), own=dict.fromkeys(rated_styles, 1.0),
                        warp_vs_truth=dict.fromkeys(rated_styles, 1.0))  # fmt: skip

        return rate

    monkeypatch.setattr(build, "WORK", tmp_path)
    monkeypatch.setattr(build, "_rater", fake_rater)
    monkeypatch.setattr(build, "rating_id", lambda adapter: "weights-a")
    grid_size = len(build.TUNE_SKIPS) * len(build.TUNE_SCALES) * len(build.TUNE_LEAD_INS)
    first = build.tune(clips=2, steps=4)
    assert len(calls) == grid_size and first["weights"] == "weights-a" and first["default"]["text_scale"] == 5.0
    calls.clear()
    assert build.tune(clips=2, steps=4, reuse_grid=True) == first and calls == []
    monkeypatch.setattr(build, "rating_id", lambda adapter: "weights-b")
    assert build.tune(clips=2, steps=4, reuse_grid=True)["weights"] == "weights-b" and len(calls) == grid_size
    calls.clear()
    monkeypatch.setitem(build.TOY_SETTINGS, "shift", 12.0)
    assert build.tune(clips=2, steps=4, reuse_grid=True)["sampler"] == "euler shift 12" and len(calls) == grid_size


def test_rated_adapter_is_the_trained_one_else_the_bundled_one_and_the_rating_id_follows_adapter_and_base(tmp_path, monkeypatch):
    import hashlib

    import pickstyle.toy.model

    monkeypatch.setattr(build, "WORK", tmp_path)
    bundled = pickstyle.toy.model.TOY_MODEL / "adapter"
    assert build.rated_adapter() == bundled  # a fresh clone: nothing trained
    bundled_hash = hashlib.sha256((bundled / "pytorch_lora_weights.safetensors").read_bytes()).hexdigest()
    assert build.rating_id(build.rated_adapter()) == bundled_hash[:12]  # no base weights here yet
    path = tmp_path / "adapters" / "pickstyle" / "adapter" / "pytorch_lora_weights.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"one")
    first = build.rating_id(build.rated_adapter())
    path.write_bytes(b"two")
    second = build.rating_id(path.parent)
    assert build.rated_adapter() == path.parent and first != second != bundled_hash[:12]
    decoder = tmp_path / "base" / "model" / "vae" / "diffusion_pytorch_model.safetensors"
    decoder.parent.mkdir(parents=True)
    decoder.write_bytes(b"decoder one")
    with_base = build.rating_id(path.parent)
    decoder.write_bytes(b"decoder two")  # a fine-tuned decoder: the same adapter, other outputs
    assert len({second, with_base, build.rating_id(path.parent)}) == 3
    path.unlink()
    monkeypatch.setattr(pickstyle.toy.model, "TOY_MODEL", tmp_path / "no-model")
    with pytest.raises(SystemExit, match="adapter is missing: run `python toy/build.py adapter` first"):
        build.rated_adapter()


def test_base_model_is_written_from_the_bundled_weights_in_a_fresh_clone(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from pickstyle.toy.model import TOY_MODEL

    monkeypatch.setattr(build, "WORK", tmp_path)
    assert not (build.base_model() / "model_index.json").exists()  # no base trained: nothing to write
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "state.json").write_text("{}")
    model = build.base_model()
    assert model == tmp_path / "base" / "model" and not (model / "adapter").exists()
    written = load_file(str(next((model / "transformer").glob("*.safetensors"))))
    bundled = load_file(str(next((TOY_MODEL / "transformer").glob("*.safetensors"))))
    assert written.keys() == bundled.keys()
    assert all(written[k].dtype == torch.float32 and torch.equal(written[k].half(), bundled[k]) for k in bundled)


def test_refine_without_a_tune_says_to_run_it(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "WORK", tmp_path)
    with pytest.raises(SystemExit, match="tune.json is missing: run `python toy/build.py tune` first"):
        build.refine()


def test_export_in_a_fresh_clone_keeps_the_bundled_adapters_and_the_same_base(tmp_path, monkeypatch):
    import shutil

    from safetensors.torch import load_file

    import pickstyle.toy.model

    bundled, assets = pickstyle.toy.model.ASSETS, tmp_path / "assets"
    shutil.copytree(bundled, assets)
    monkeypatch.setattr(pickstyle.toy.model, "ASSETS", assets)
    monkeypatch.setattr(pickstyle.toy.model, "TOY_MODEL", assets / pickstyle.toy.model.TOY_MODEL.name)
    monkeypatch.setattr(pickstyle.toy.model, "DEMO_CLIP", assets / pickstyle.toy.model.DEMO_CLIP.name)
    monkeypatch.setattr(build, "WORK", tmp_path / "work")
    (tmp_path / "work" / "base").mkdir(parents=True)
    (tmp_path / "work" / "base" / "state.json").write_text("{}")  # a base was trained; its weights are not here
    model = assets / pickstyle.toy.model.TOY_MODEL.name
    before = {p.relative_to(assets): p.read_bytes() for p in assets.rglob("*.safetensors")}
    build.export(dict(build.TOY_SETTINGS, steps=7))
    after = {p.relative_to(assets): p for p in assets.rglob("*.safetensors")}
    assert after.keys() == before.keys() and not model.with_name(model.name + ".new").exists()
    for name, path in after.items():  # adapters kept byte for byte, the base re-written with the same tensors
        if "adapter" in name.parts or "ablations" in name.parts:
            assert path.read_bytes() == before[name], name
        else:
            old = load_file(str(bundled / name))
            assert all(torch.equal(t, old[k]) for k, t in load_file(str(path)).items()), name
    assert json.loads((model / "pickstyle.json").read_text())["steps"] == 7


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["decoder", "--minutes", "3"], (3.0, 2e-4, 1.0, 1, False)),
        (["decoder", "--minutes", "3", "--lr", "5e-5", "--temporal-weight", "4"], (3.0, 5e-5, 4.0, 1, False)),
        (["decoder", "--minutes", "9", "--widen", "2", "--decay"], (9.0, 2e-4, 1.0, 2, True)),
    ],
)
def test_decoder_stage_passes_its_learning_rate_temporal_weight_and_widening(monkeypatch, argv, expected):
    import inspect

    calls, default_lr = [], inspect.signature(build.tune_decoder).parameters["lr"].default
    monkeypatch.setattr(build, "tune_decoder", lambda minutes, temporal_weight, widen, decay, lr=default_lr: calls.append((minutes, lr, temporal_weight, widen, decay)))
    monkeypatch.setattr(sys, "argv", ["build.py", *argv])
    build.main()
    assert calls == [expected]


@pytest.mark.parametrize("variant", ["pickstyle", "no-motion", "main-qkv"])
def test_adapter_stage_from_the_bundle_starts_from_the_bundled_weights_with_a_warm_up(tmp_path, monkeypatch, variant):
    import pickstyle.cli

    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "manifest.jsonl").write_text("")
    monkeypatch.setattr(build, "WORK", tmp_path)
    monkeypatch.setattr(build, "base_model", lambda: tmp_path / "base" / "model")
    calls = []
    monkeypatch.setattr(pickstyle.cli, "main", lambda argv: calls.append(argv) or 0)
    for extra in ([], ["--from-bundle", "--lr", "2e-4", "--steps", "30", "--device", "cuda"]):
        monkeypatch.setattr(sys, "argv", ["build.py", "adapter", "--variant", variant, *extra])
        build.main()
    plain, carried = calls
    assert "--init-adapter" not in plain and "--lr" not in plain and "--no-cpu" not in plain
    flags = dict(zip(carried, carried[1:]))
    init = Path(flags["--init-adapter"])
    assert init.exists() and init == build.bundled_adapter(variant)
    assert (flags["--lr"], flags["--warmup-steps"], flags["--max-steps"]) == ("0.0002", "100", "30") and "--no-cpu" in carried
    assert flags["--output"] == str(tmp_path / "adapters" / variant)


def test_fp16_adapter_copies_as_half_and_leaves_an_identical_target_untouched(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    source, target = tmp_path / "adapter", tmp_path / "bundle" / "adapter.safetensors"
    source.mkdir()
    key, metadata = "transformer.vace_blocks.0.attn1.to_q.lora_A.weight", {"format": "pt", "lora_adapter_metadata": "{}"}
    weight = torch.linspace(-1, 1, 12).reshape(3, 4)
    save_file({key: weight}, str(source / "pytorch_lora_weights.safetensors"), metadata=metadata)
    build._fp16_adapter(source, target)
    with safe_open(str(target), "pt") as f:
        assert f.metadata() == metadata
        copied = f.get_tensor(key)
    assert copied.dtype == torch.float16 and torch.equal(copied, weight.half())
    written = target.stat().st_mtime_ns
    build._fp16_adapter(source, target)
    assert target.stat().st_mtime_ns == written  # the same tensors and metadata: not rewritten
    save_file({key: weight * 2}, str(source / "pytorch_lora_weights.safetensors"), metadata=metadata)
    build._fp16_adapter(source, target)
    with safe_open(str(target), "pt") as f:
        assert torch.equal(f.get_tensor(key), (weight * 2).half())


def test_widened_decoder_computes_the_same_round_trip_and_keeps_the_encoder():
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=4, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[False], attn_scales=[]).eval()
    for p in vae.decoder.parameters():  # trained-looking weights: norms' gains and biases away from their init
        p.data.add_(0.1 * torch.randn_like(p))
    x = torch.rand(1, 3, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
        wide = build.widen_decoder(vae, 2, noise=0.0).eval()
        assert wide.config.decoder_base_dim == 8 and wide.config.base_dim == 4
        assert sum(p.numel() for p in wide.decoder.parameters()) > 3 * sum(p.numel() for p in vae.decoder.parameters())
        assert torch.equal(wide.encode(x).latent_dist.mode(), z)
        torch.testing.assert_close(wide.decode(z).sample, vae.decode(z).sample, atol=1e-5, rtol=0)
        jittered = build.widen_decoder(vae, 2, noise=1e-3).eval()
        conv = jittered.decoder.conv_in.weight
        assert not torch.equal(conv[0::2], conv[1::2])  # the repeats differ, so training can tell them apart
        assert (jittered.decode(z).sample - vae.decode(z).sample).abs().max() < 0.05
