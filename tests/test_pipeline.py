"""PickStylePipeline on the tiny random Wan2.1-VACE: equivalence with diffusers, CS-CFG's three
conditions, the seeded null context, noise initialisation from the source, input checks."""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import WanVACEPipeline
from diffusers.utils.torch_utils import randn_tensor

from pickstyle import PickStyleError, PickStylePipeline
from pickstyle.pipeline.guidance import permute_context
from pickstyle.pipeline.lead_in import with_lead_in
from pickstyle.pipeline.pipeline import WAN_NEGATIVE_PROMPT
from pickstyle.pipeline.schedulers import make_scheduler

from .conftest import moving_square_video

PROMPT = "anime style. a man boxing in a ring"
NEG = "worst quality, low quality"


def _pil(video):
    return [PIL.Image.fromarray(f) for f in video]


class ForwardRecorder:
    """Records the keyword inputs of every transformer forward call."""

    def __init__(self, transformer):
        self.calls = []
        self.handle = transformer.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        self.calls.append({k: v.detach().clone() for k, v in kwargs.items() if torch.is_tensor(v)})

    def remove(self):
        self.handle.remove()


def _run(pipe, **kw):
    """The pipeline on the moving square (through `with_lead_in`, which without a lead-in is the plain call)."""
    args = dict(video=moving_square_video(), prompt=PROMPT, negative_prompt=NEG, num_inference_steps=3, skip_steps=1, height=32, width=32)
    args.update(kw)
    return with_lead_in(pipe, **args).frames[0]


@pytest.mark.parametrize("scheduler", ["euler", "dpm++"])
@pytest.mark.parametrize("mode", [dict(guidance="cfg"), dict(guidance="cs-cfg", context_guidance_scale=0.0)])
def test_equals_diffusers_wan_vace_with_plain_cfg(tiny_components, scheduler, mode):
    video = _pil(moving_square_video())
    reference = WanVACEPipeline(**tiny_components)
    reference.scheduler = make_scheduler(scheduler, 5.0)
    expected = reference(
        video=video, prompt=PROMPT, negative_prompt=NEG, height=32, width=32, num_frames=9,
        num_inference_steps=4, guidance_scale=4.5, generator=torch.Generator().manual_seed(11),
    ).frames[0]  # fmt: skip
    pipe = PickStylePipeline(**tiny_components)
    pipe.scheduler = make_scheduler(scheduler, 5.0)
    out = pipe(
        video=video, prompt=PROMPT, negative_prompt=NEG, height=32, width=32, num_inference_steps=4,
        text_guidance_scale=4.5, apg=False, skip_steps=0, generator=torch.Generator().manual_seed(11), **mode,
    ).frames[0]  # fmt: skip
    assert out.shape == expected.shape == (9, 32, 32, 3)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_output_shape_range_and_default_size(tiny_components):
    pipe = PickStylePipeline(**tiny_components)
    video = moving_square_video(num_frames=11, height=40, width=72)
    out = _run(pipe, video=video, height=None, width=None, area=96 * 176, generator=torch.Generator().manual_seed(0))
    # 11 frames -> 9 (4k+1); 40x72 -> aspect kept at about 96x176 pixels in multiples of 16
    assert out.shape[0] == 9 and out.shape[3] == 3
    assert out.shape[1] % 16 == 0 and out.shape[2] % 16 == 0
    assert abs(out.shape[2] / out.shape[1] - 72 / 40) < 0.1
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1


def test_seed_reproduces_and_different_seeds_differ(tiny_components):
    pipe = PickStylePipeline(**tiny_components)
    a = _run(pipe, generator=torch.Generator().manual_seed(5))
    b = _run(pipe, generator=torch.Generator().manual_seed(5))
    c = _run(pipe, generator=torch.Generator().manual_seed(6))
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


@pytest.mark.parametrize(
    "kw, passes",
    [
        (dict(guidance="none"), 1),
        (dict(guidance="cfg"), 2),
        (dict(guidance="cs-cfg"), 3),
        (dict(guidance="cs-cfg", context_guidance_scale=0.0), 2),
        # a pass whose guidance term has weight 0 is skipped: w_t - 1 for text, w_c - 1 (APG) or w_c for context
        (dict(text_guidance_scale=1.0, context_guidance_scale=1.0), 1),
        (dict(context_guidance_scale=1.0), 2),
        (dict(apg=False, context_guidance_scale=1.0), 3),
        (dict(apg=False, text_guidance_scale=1.0, context_guidance_scale=0.0), 1),
        (dict(guidance="cfg", text_guidance_scale=1.0), 1),
    ],
)
def test_number_of_predictions_per_step(tiny_components, kw, passes):
    pipe = PickStylePipeline(**tiny_components)
    rec = ForwardRecorder(pipe.transformer)
    _run(pipe, skip_steps=0, generator=torch.Generator().manual_seed(0), **kw)
    rec.remove()
    assert len(rec.calls) == 3 * passes


def test_cs_cfg_conditions_and_permuted_null_context_from_the_generator(tiny_components):
    pipe = PickStylePipeline(**tiny_components)
    rec = ForwardRecorder(pipe.transformer)
    _run(pipe, skip_steps=0, apg=False, generator=torch.Generator().manual_seed(3))
    rec.remove()
    text, null_text = rec.calls[0]["encoder_hidden_states"], rec.calls[1]["encoder_hidden_states"]
    context = rec.calls[0]["control_hidden_states"]
    assert context.shape == (1, 96, 3, 4, 4)
    assert not torch.equal(text, null_text)
    # the null text is the negative prompt's embedding
    neg = pipe.encode_prompt(NEG, do_classifier_free_guidance=False, max_sequence_length=512)[0]
    torch.testing.assert_close(null_text, neg)
    # replay the generator: initial noise first, then T, H, W permutations at every step
    g = torch.Generator().manual_seed(3)
    noise = randn_tensor((1, 16, 3, 4, 4), generator=g, dtype=torch.float32)
    torch.testing.assert_close(rec.calls[0]["hidden_states"], noise)
    nulls = []
    for step in range(3):
        e_c, e_t0, e_0 = rec.calls[3 * step : 3 * step + 3]
        assert torch.equal(e_c["encoder_hidden_states"], text) and torch.equal(e_c["control_hidden_states"], context)
        assert torch.equal(e_t0["encoder_hidden_states"], null_text)
        assert torch.equal(e_t0["control_hidden_states"], context)
        assert torch.equal(e_0["encoder_hidden_states"], null_text)
        torch.testing.assert_close(e_0["control_hidden_states"], permute_context(context, g))
        nulls.append(e_0["control_hidden_states"])
    # redrawn every step (4x4 spatial grids, 3 frames: equal draws are very unlikely in 3 tries)
    assert not (torch.equal(nulls[0], nulls[1]) and torch.equal(nulls[1], nulls[2]))


def test_zero_null_context_is_the_context_of_a_black_video(tiny_components):
    pipe = PickStylePipeline(**tiny_components)
    rec = ForwardRecorder(pipe.transformer)
    _run(pipe, null_context="zero", generator=torch.Generator().manual_seed(0))
    rec.remove()
    zero = pipe.prepare_context(torch.zeros(1, 3, 9, 32, 32))
    torch.testing.assert_close(rec.calls[2]["control_hidden_states"], zero)
    torch.testing.assert_close(rec.calls[5]["control_hidden_states"], zero)


@pytest.mark.parametrize("scheduler", ["dpm++", "unipc", "euler"])
def test_skip_starts_from_the_noised_source_latent(tiny_components, scheduler):
    pipe = PickStylePipeline(**tiny_components)
    pipe.scheduler = make_scheduler(scheduler, 16.0)
    video = moving_square_video()
    rec = ForwardRecorder(pipe.transformer)
    _run(pipe, video=video, num_inference_steps=6, skip_steps=2, guidance="none", generator=torch.Generator().manual_seed(9))
    rec.remove()
    assert len(rec.calls) == 4  # steps 2..5
    # the source latent: normalised VAE mode of the source, no sampling
    x = torch.from_numpy(video).permute(3, 0, 1, 2)[None].float() / 255 * 2 - 1
    z = pipe.vae.encode(x).latent_dist.mode()
    mean = torch.tensor(pipe.vae.config.latents_mean).view(1, 16, 1, 1, 1)
    std = torch.tensor(pipe.vae.config.latents_std).view(1, 16, 1, 1, 1)
    z = (z - mean) / std
    eps = randn_tensor(z.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float32)
    pipe.scheduler.set_timesteps(6)
    sigma = pipe.scheduler.sigmas[2]
    assert 0.5 < sigma < 1
    torch.testing.assert_close(rec.calls[0]["hidden_states"], (1 - sigma) * z + sigma * eps, atol=1e-5, rtol=1e-4)
    assert rec.calls[0]["timestep"].item() == pytest.approx(pipe.scheduler.timesteps[2].item())


def test_batched_guidance_equals_separate_passes(tiny_components):
    pipe = PickStylePipeline(**tiny_components)
    a = _run(pipe, generator=torch.Generator().manual_seed(1), batch_guidance=False)
    b = _run(pipe, generator=torch.Generator().manual_seed(1), batch_guidance=True)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_guidance_settings_change_the_output(tiny_components):
    pipe = PickStylePipeline(**tiny_components)
    runs = {
        name: _run(pipe, generator=torch.Generator().manual_seed(2), **kw)
        for name, kw in {
            "default": {},
            "no_apg": dict(apg=False),
            "zero_null": dict(null_context="zero"),
            "cfg": dict(guidance="cfg"),
            "none": dict(guidance="none"),
        }.items()
    }
    names = list(runs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(runs[a] - runs[b]).max() > 1e-4, (a, b)


def test_default_negative_prompt_is_wans(tiny_components):
    pipe = PickStylePipeline(**tiny_components)
    rec = ForwardRecorder(pipe.transformer)
    pipe(video=moving_square_video(), prompt=PROMPT, num_inference_steps=2, guidance="cfg", skip_steps=0, height=32, width=32)
    rec.remove()
    wan = pipe.encode_prompt(WAN_NEGATIVE_PROMPT, do_classifier_free_guidance=False, max_sequence_length=512)[0]
    torch.testing.assert_close(rec.calls[1]["encoder_hidden_states"], wan)


@pytest.mark.parametrize(
    "kw, named",
    [
        (dict(skip_steps=3), "skip_steps"),
        (dict(skip_steps=-1), "skip_steps"),
        (dict(text_guidance_scale=-1.0), "text_guidance_scale"),
        (dict(context_guidance_scale=float("nan")), "context_guidance_scale"),
        (dict(guidance="magic"), "guidance"),
        (dict(null_context="blur"), "null_context"),
        (dict(video=[]), "video"),
        (dict(height=30), "height"),
        (dict(num_frames=8), "num_frames"),
        (dict(lead_in_frames=3), "lead_in_frames"),
        (dict(lead_in_frames=12), "lead_in_frames"),
        (dict(guidance_end=0.0), "guidance_end"),
        (dict(guidance_end=1.5), "guidance_end"),
        (dict(num_samples=0), "num_samples"),
        (dict(num_samples=True), "num_samples"),
    ],
)
def test_bad_arguments_raise_one_line_errors(tiny_components, kw, named):
    pipe = PickStylePipeline(**tiny_components)
    with pytest.raises(PickStyleError) as err:
        _run(pipe, **kw)
    assert named in str(err.value) and "\n" not in str(err.value)


def test_guidance_end_guides_only_the_first_steps_of_the_schedule(tiny_components):
    pipe = PickStylePipeline(**tiny_components)

    def run(**kw):
        rec = ForwardRecorder(pipe.transformer)
        out = _run(pipe, generator=torch.Generator().manual_seed(5), **kw)
        rec.remove()
        return out, rec.calls

    full, full_calls = run(skip_steps=0)
    half, half_calls = run(skip_steps=0, guidance_end=0.5)  # steps 0 and 1 of 3 (i < 1.5) guided, step 2 one pass
    assert (len(full_calls), len(half_calls)) == (9, 3 + 3 + 1)
    for a, b in zip(full_calls[:7], half_calls):  # the same inputs up to the last step's conditional pass
        torch.testing.assert_close(a["hidden_states"], b["hidden_states"], rtol=0, atol=0)
    unguided, _ = run(skip_steps=0, guidance="none")
    assert not np.array_equal(half, full) and np.abs(half - unguided).max() > 1e-4
    # the skipped steps count: with skip 1 of 3, guidance_end 0.3 guides no step (1 >= 0.9)
    late, late_calls = run(skip_steps=1, guidance_end=0.3)
    np.testing.assert_array_equal(late, run(skip_steps=1, guidance="none")[0])
    assert len(late_calls) == 2
    np.testing.assert_array_equal(run(skip_steps=0, guidance_end=1.0)[0], full)


def test_given_initial_noise_is_used_and_must_count_the_lead_in(tiny_components):
    pipe = PickStylePipeline(**tiny_components)
    noise = _run(pipe, output_type="latent", skip_steps=0, num_inference_steps=1, guidance="none", generator=torch.Generator().manual_seed(4))
    noise = torch.randn((1, *noise.shape), generator=torch.Generator().manual_seed(9))  # [1, 16, T', H', W'] without a lead-in
    given = _run(pipe, latents=noise, guidance="cfg", generator=torch.Generator().manual_seed(3))
    # plain CFG draws nothing else, so the generator no longer matters
    np.testing.assert_array_equal(given, _run(pipe, latents=noise.clone(), guidance="cfg", generator=torch.Generator().manual_seed(8)))
    assert np.abs(given - _run(pipe, guidance="cfg", generator=torch.Generator().manual_seed(3))).max() > 1e-3
    with pytest.raises(PickStyleError, match=r"latents of shape .*lead-in's included") as err:
        _run(pipe, latents=noise, lead_in_frames=4)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("scheduler", ["euler", "dpm++"])
def test_samples_are_denoised_as_one_batch_and_their_videos_averaged(tiny_components, scheduler):
    pipe = PickStylePipeline(**tiny_components)
    pipe.scheduler = make_scheduler(scheduler, 3.0)
    kw = dict(guidance="cfg", lead_in_frames=4)  # plain CFG draws nothing from the generator but the noise

    def latents_of(**more):  # the samples' latents [S, 16, T', H', W']
        args = dict(video=moving_square_video(), prompt=PROMPT, negative_prompt=NEG, num_inference_steps=3, skip_steps=1, height=32, width=32)
        return with_lead_in(pipe, **{**args, **more}, output_type="latent").frames

    shape = latents_of(num_inference_steps=1, skip_steps=0, guidance="none", lead_in_frames=4).shape
    noise = torch.randn((2, *shape[1:]), generator=torch.Generator().manual_seed(9))
    both_latents = latents_of(latents=noise, num_samples=2, **kw)
    for k in range(2):  # each sample of the batch is the single run from its noise
        torch.testing.assert_close(both_latents[k : k + 1], latents_of(latents=noise[k : k + 1], **kw), rtol=1e-4, atol=1e-5)
    singles = [_run(pipe, latents=noise[k : k + 1], **kw) for k in range(2)]
    both = _run(pipe, latents=noise, num_samples=2, **kw)
    assert both.shape == singles[0].shape == (9, 32, 32, 3)
    inside = np.all([(s > 0) & (s < 1) for s in singles], axis=0)  # where neither video was clipped to [0, 1]
    assert inside.mean() > 0.5 and np.abs(singles[0] - singles[1])[inside].max() > 1e-3
    np.testing.assert_allclose(both[inside], ((singles[0] + singles[1]) / 2)[inside], atol=1e-5)
    # drawn from the generator, the first noise is the one a single sample draws (the noises come before any permutation)
    one = latents_of(generator=torch.Generator().manual_seed(3), **kw)
    torch.testing.assert_close(latents_of(num_samples=3, generator=torch.Generator().manual_seed(3), **kw)[:1], one, rtol=1e-4, atol=1e-5)
    drawn = latents_of(num_samples=3, generator=torch.Generator().manual_seed(3))  # CS-CFG: the permutations are shared
    assert drawn.shape == (3, shape[1], 3, *shape[3:]) and (drawn[1] - drawn[2]).abs().max() > 1e-3  # no lead-in: 3 latent frames
    torch.testing.assert_close(latents_of(num_samples=3, generator=torch.Generator().manual_seed(3), batch_guidance=True), drawn, rtol=1e-4, atol=1e-5)
    with pytest.raises(PickStyleError, match=r"latents of shape .*num_videos_per_prompt"):
        _run(pipe, latents=noise, **kw)


def test_lead_in_generates_the_clip_after_its_mirrored_start_and_drops_that_start(tiny_components):
    pipe = PickStylePipeline(**tiny_components)
    video = moving_square_video()
    led = _run(pipe, lead_in_frames=4, generator=torch.Generator().manual_seed(3))
    padded = np.concatenate([video[4:0:-1], video])  # frames 4, 3, 2, 1, then 0..8
    by_hand = _run(pipe, video=padded, generator=torch.Generator().manual_seed(3))
    plain = _run(pipe, generator=torch.Generator().manual_seed(3))
    assert led.shape == plain.shape == (9, 32, 32, 3)
    np.testing.assert_array_equal(led, by_hand[4:])
    assert np.abs(led - plain).max() > 1e-3


def test_from_pretrained_round_trip(tiny_model_dir, tiny_components, tmp_path):
    loaded = PickStylePipeline.from_pretrained(tiny_model_dir, local_files_only=True)
    assert isinstance(loaded, PickStylePipeline)
    fresh = PickStylePipeline(**tiny_components)
    a = _run(loaded, generator=torch.Generator().manual_seed(4))
    b = _run(fresh, generator=torch.Generator().manual_seed(4))
    np.testing.assert_allclose(a, b, atol=1e-6)
    loaded.save_pretrained(tmp_path / "again")
    again = PickStylePipeline.from_pretrained(tmp_path / "again", local_files_only=True)
    np.testing.assert_allclose(_run(again, generator=torch.Generator().manual_seed(4)), a, atol=1e-6)


def test_accepts_pil_uint8_and_float_tensor_inputs(tiny_components):
    pipe = PickStylePipeline(**tiny_components)
    video = moving_square_video()
    outs = [
        _run(pipe, video=v, generator=torch.Generator().manual_seed(0))
        for v in (video, _pil(video), torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255)
    ]
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)
    np.testing.assert_allclose(outs[0], outs[2], atol=1e-5)


def test_prepare_context_with_an_inpainting_mask(tiny_components):
    pipe = PickStylePipeline(**tiny_components)
    video = torch.from_numpy(moving_square_video()).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    torch.testing.assert_close(pipe.prepare_context(video, mask=torch.ones_like(video)), pipe.prepare_context(video))
    keep = pipe.prepare_context(video, mask=torch.zeros_like(video))  # keep everything: the video is "inactive"
    full = pipe.prepare_context(video)
    torch.testing.assert_close(keep[:, :16], full[:, 16:32])
    torch.testing.assert_close(keep[:, 16:32], full[:, :16])
    assert keep[:, 32:].abs().sum() == 0 and torch.all(full[:, 32:] == 1)
