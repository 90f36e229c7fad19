"""Flow-matching samplers for inference, by name (the CLI's `--scheduler` and `--shift`)."""

from __future__ import annotations

from pickstyle.errors import PickStyleError
from pickstyle.settings import DEFAULTS

SCHEDULERS = ("dpm++", "unipc", "euler")


def make_scheduler(name: str = DEFAULTS["scheduler"], shift: float = DEFAULTS["shift"], num_train_timesteps: int = 1000):
    """A diffusers scheduler on flow sigmas with the given shift.

    `dpm++`: DPM-Solver++ of order 2 (the authors' sampler); `unipc`: UniPC (diffusers' Wan
    default); `euler`: flow-matching Euler. sigma' = shift * s / (1 + (shift - 1) * s).
    """
    from diffusers import (
        DPMSolverMultistepScheduler,
        FlowMatchEulerDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    if not shift > 0:
        raise PickStyleError(f"--shift {shift}: must be a positive number")
    flow = dict(num_train_timesteps=num_train_timesteps, prediction_type="flow_prediction", use_flow_sigmas=True)
    if name == "dpm++":
        return DPMSolverMultistepScheduler(**flow, flow_shift=shift, algorithm_type="dpmsolver++", solver_order=2)
    if name == "unipc":
        return UniPCMultistepScheduler(**flow, flow_shift=shift)
    if name == "euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps, shift=shift)
    raise PickStyleError(f"--scheduler {name!r}: expected one of {', '.join(SCHEDULERS)}")
