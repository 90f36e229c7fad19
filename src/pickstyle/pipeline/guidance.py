"""CS-CFG: classifier-free guidance factored into a text (style) and a context (content) direction.

Three predictions per step, each a tensor of the latent's shape [B, C, T, H, W]:

    e_c  = f(x, t; text,      context)
    e_t0 = f(x, t; null text, context)
    e_0  = f(x, t; null text, null context)

The null context is the context latent with its T, H and W axes permuted (`permute_context`).
Every function here is pure: tensors in, tensors out; the APG momentum buffers are passed in and
returned, never kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

GUIDANCE_MODES = ("cs-cfg", "cfg", "none")
NULL_CONTEXTS = ("permute", "zero")


def cs_cfg(
    e_c: torch.Tensor,
    e_t0: torch.Tensor,
    e_0: torch.Tensor | None,
    text_scale: float,
    context_scale: float,
) -> torch.Tensor:
    """Plain CS-CFG: e = e_t0 + w_t (e_c - e_t0) + w_c (e_t0 - e_0).

    With `e_0=None` (or w_c = 0) this is ordinary CFG with the context kept in both branches.
    """
    out = e_t0 + text_scale * (e_c - e_t0)
    if e_0 is not None and context_scale != 0:
        out = out + context_scale * (e_t0 - e_0)
    return out


def _flat_dims(x: torch.Tensor) -> list[int]:
    return list(range(1, x.ndim))


def apg_direction(
    diff: torch.Tensor,
    pred_cond: torch.Tensor,
    running: torch.Tensor | None,
    momentum: float = 0.75,
    norm_threshold: float = 55.0,
    eta: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive projected guidance of one guidance direction.

    m = diff + momentum * running (the momentum buffer, `running=None` on the first step);
    m is rescaled to an L2 norm of at most `norm_threshold` (per sample, over all other axes),
    then split into parts parallel and orthogonal to `pred_cond`; returns
    (orthogonal + eta * parallel, m), the second to pass back as `running` next step.
    `norm_threshold <= 0` turns the rescaling off.
    """
    m = diff if running is None else diff + momentum * running
    dims = _flat_dims(m)
    update = m
    if norm_threshold > 0:
        norm = torch.linalg.vector_norm(update, dim=dims, keepdim=True)
        update = update * torch.clamp(norm_threshold / norm.clamp_min(1e-12), max=1.0)
    unit = torch.nn.functional.normalize(pred_cond.flatten(1), dim=1).view_as(pred_cond)
    parallel = (update * unit).sum(dim=dims, keepdim=True) * unit
    orthogonal = update - parallel
    return orthogonal + eta * parallel, m


@dataclass
class APGState:
    """Momentum buffers of the two guidance directions, carried from step to step."""

    text: torch.Tensor | None = None
    context: torch.Tensor | None = None


def cs_cfg_apg(
    e_c: torch.Tensor,
    e_t0: torch.Tensor,
    e_0: torch.Tensor | None,
    text_scale: float,
    context_scale: float,
    state: APGState,
    momentum: float = 0.75,
    norm_threshold: float = 55.0,
    eta: float = 0.0,
) -> tuple[torch.Tensor, APGState]:
    """CS-CFG with both differences passed through APG, as the authors run it:

    e = e_c + (w_t - 1) APG(e_c - e_t0) + (w_c - 1) APG(e_t0 - e_0).

    Note the context term's weight is w_c - 1 here where plain CS-CFG has w_c. With `e_0=None`
    (or w_c = 0) the context term is left out: ordinary APG-guided CFG.
    """
    text_update, text_running = apg_direction(e_c - e_t0, e_c, state.text, momentum, norm_threshold, eta)
    out = e_c + (text_scale - 1) * text_update
    context_running = state.context
    if e_0 is not None and context_scale != 0:
        context_update, context_running = apg_direction(e_t0 - e_0, e_c, state.context, momentum, norm_threshold, eta)
        out = out + (context_scale - 1) * context_update
    return out, APGState(text_running, context_running)


def permute_context(context: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The null context: `context` [B, C, T, H, W] with independent random permutations of its
    T, H and W axes, the same for every channel and sample, drawn from `generator`
    (three `torch.randperm` draws, T then H then W)."""
    device = generator.device if generator is not None else torch.device("cpu")
    _, _, t, h, w = context.shape
    perm_t, perm_h, perm_w = (torch.randperm(n, generator=generator, device=device).to(context.device) for n in (t, h, w))
    return context[:, :, perm_t][:, :, :, perm_h][:, :, :, :, perm_w]
