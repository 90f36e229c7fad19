"""CS-CFG arithmetic, APG and the null-context permutation, each on plain tensors."""

import pytest
import torch

from pickstyle.pipeline.guidance import (
    APGState,
    apg_direction,
    cs_cfg,
    cs_cfg_apg,
    permute_context,
)


def _preds(seed=0, shape=(1, 4, 3, 5, 6)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(3)]


def test_cs_cfg_is_the_plain_combination():
    e_c, e_t0, e_0 = _preds()
    out = cs_cfg(e_c, e_t0, e_0, 5.0, 4.0)
    expected = e_t0 + 5.0 * (e_c - e_t0) + 4.0 * (e_t0 - e_0)
    torch.testing.assert_close(out, expected)
    # element by element on one entry, written out
    i = (0, 1, 2, 3, 4)
    assert out[i].item() == pytest.approx(
        e_t0[i].item() + 5 * (e_c[i].item() - e_t0[i].item()) + 4 * (e_t0[i].item() - e_0[i].item()), rel=1e-5
    )


def test_cs_cfg_without_context_term_is_ordinary_cfg():
    e_c, e_t0, e_0 = _preds(1)
    cfg = e_t0 + 3.5 * (e_c - e_t0)
    torch.testing.assert_close(cs_cfg(e_c, e_t0, None, 3.5, 4.0), cfg)
    torch.testing.assert_close(cs_cfg(e_c, e_t0, e_0, 3.5, 0.0), cfg)
    torch.testing.assert_close(cs_cfg(e_c, e_t0, None, 1.0, 0.0), e_c)


def test_apg_direction_hand_computed():
    diff = torch.tensor([[3.0, 4.0]])
    cond = torch.tensor([[2.0, 0.0]])  # unit vector along the first axis
    update, running = apg_direction(diff, cond, None, momentum=0.75, norm_threshold=55.0, eta=0.0)
    torch.testing.assert_close(update, torch.tensor([[0.0, 4.0]]))  # parallel part [3, 0] removed
    torch.testing.assert_close(running, diff)
    update, _ = apg_direction(diff, cond, None, momentum=0.75, norm_threshold=55.0, eta=0.5)
    torch.testing.assert_close(update, torch.tensor([[1.5, 4.0]]))
    # norm 5 capped at 2.5: everything halves
    update, _ = apg_direction(diff, cond, None, momentum=0.75, norm_threshold=2.5, eta=1.0)
    torch.testing.assert_close(update, torch.tensor([[1.5, 2.0]]))


def test_apg_momentum_buffer_accumulates():
    d1, d2, cond = _preds(2)
    _, m1 = apg_direction(d1, cond, None, momentum=0.75)
    _, m2 = apg_direction(d2, cond, m1, momentum=0.75)
    torch.testing.assert_close(m2, d2 + 0.75 * d1)
    update, _ = apg_direction(d2, cond, m1, momentum=0.75, norm_threshold=0.0, eta=1.0)
    torch.testing.assert_close(update, d2 + 0.75 * d1)


def test_apg_update_is_orthogonal_and_capped():
    diff, cond, _ = _preds(3)
    diff = diff * 100  # norm far above the cap
    update, _ = apg_direction(diff, cond, None, norm_threshold=55.0, eta=0.0)
    assert abs(torch.sum(update * cond).item()) < 1e-3 * update.norm().item() * cond.norm().item()
    assert update.norm().item() <= 55.0 + 1e-3
    full, _ = apg_direction(diff, cond, None, norm_threshold=55.0, eta=1.0)
    assert full.norm().item() == pytest.approx(55.0, rel=1e-5)


def test_cs_cfg_apg_reduces_to_authors_formula_when_apg_is_identity():
    e_c, e_t0, e_0 = _preds(4)
    out, state = cs_cfg_apg(e_c, e_t0, e_0, 5.0, 4.0, APGState(), momentum=0.0, norm_threshold=0.0, eta=1.0)
    torch.testing.assert_close(out, e_c + 4.0 * (e_c - e_t0) + 3.0 * (e_t0 - e_0))
    torch.testing.assert_close(state.text, e_c - e_t0)
    torch.testing.assert_close(state.context, e_t0 - e_0)
    # context scale 0: no context term, no context buffer
    out, state = cs_cfg_apg(e_c, e_t0, e_0, 5.0, 0.0, APGState(), momentum=0.0, norm_threshold=0.0, eta=1.0)
    torch.testing.assert_close(out, e_c + 4.0 * (e_c - e_t0))
    assert state.context is None


def test_cs_cfg_apg_terms_of_scale_one_vanish_so_their_passes_can_be_skipped():
    e_c, e_t0, e_0 = _preds(7)
    with_null_context, _ = cs_cfg_apg(e_c, e_t0, e_0, 5.0, 1.0, APGState())
    without, _ = cs_cfg_apg(e_c, e_t0, None, 5.0, 1.0, APGState())
    torch.testing.assert_close(with_null_context, without)
    torch.testing.assert_close(cs_cfg_apg(e_c, e_t0, e_0, 1.0, 1.0, APGState())[0], e_c)
    # without APG the context term's weight is w_c itself: at w_c = 1 it stays
    assert not torch.allclose(cs_cfg(e_c, e_t0, e_0, 1.0, 1.0), e_c)


def test_cs_cfg_apg_threads_momentum_through_state():
    (a, b, c), (a2, b2, c2) = _preds(5), _preds(6)
    _, s1 = cs_cfg_apg(a, b, c, 5.0, 4.0, APGState())
    _, s2 = cs_cfg_apg(a2, b2, c2, 5.0, 4.0, s1, momentum=0.75)
    torch.testing.assert_close(s2.text, (a2 - b2) + 0.75 * (a - b))
    torch.testing.assert_close(s2.context, (b2 - c2) + 0.75 * (b - c))


def _coordinate_context(c=3, t=5, h=6, w=7):
    """A context whose entry at (ch, ti, hi, wi) is 1000 ch + 100 ti + 10 hi + wi."""
    ch = torch.arange(c).view(c, 1, 1, 1) * 1000
    ti = torch.arange(t).view(1, t, 1, 1) * 100
    hi = torch.arange(h).view(1, 1, h, 1) * 10
    wi = torch.arange(w).view(1, 1, 1, w)
    return (ch + ti + hi + wi).unsqueeze(0).float()


def test_permute_context_permutes_each_axis_alike_for_all_channels():
    ctx = _coordinate_context()
    out = permute_context(ctx, torch.Generator().manual_seed(0))
    assert out.shape == ctx.shape
    v = out[0].long()
    ch, t, h, w = v // 1000, (v // 100) % 10, (v // 10) % 10, v % 10
    assert torch.equal(ch, torch.arange(3).view(3, 1, 1, 1).expand_as(ch))  # channels untouched
    # the source t of an output entry depends only on its output t (and likewise h, w)
    assert torch.equal(t, t[:1, :, :1, :1].expand_as(t))
    assert torch.equal(h, h[:1, :1, :, :1].expand_as(h))
    assert torch.equal(w, w[:1, :1, :1, :].expand_as(w))
    assert sorted(t[0, :, 0, 0].tolist()) == list(range(5))
    assert sorted(h[0, 0, :, 0].tolist()) == list(range(6))
    assert sorted(w[0, 0, 0, :].tolist()) == list(range(7))
    assert not torch.equal(out, ctx)


def test_permute_context_is_seeded_and_redrawn():
    ctx = _coordinate_context(t=8, h=8, w=8)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    first = permute_context(ctx, g1)
    assert torch.equal(first, permute_context(ctx, g2))
    second = permute_context(ctx, g1)
    assert not torch.equal(first, second)  # a new draw each call
    g3 = torch.Generator().manual_seed(7)
    pt, ph, pw = torch.randperm(8, generator=g3), torch.randperm(8, generator=g3), torch.randperm(8, generator=g3)
    torch.testing.assert_close(first, ctx[:, :, pt][:, :, :, ph][:, :, :, :, pw])
