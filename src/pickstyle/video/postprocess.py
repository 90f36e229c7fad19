"""Flow-guided deflicker: a post-process for a stylised video, not part of PickStyle's method.

Each output frame is blended with the previous deflickered frame carried along the SOURCE's
optical flow, where that flow is trustworthy (in the frame, not occluded):

    z_0 = y_0,    z_t = (1 - s m_t) y_t + s m_t warp(z_t-1),

with y the stylised frames, s the strength in [0, 1) and m_t the validity mask of
`metrics.flow_warp`. The source's motion is the one the output should have, so steady regions
stop flickering while moving ones follow the source. It smooths along the same flow that
`metrics.warp_error` measures with, so it lowers that metric partly by construction: judge its
output by eye and by PSNR too (`docs/results.md`, row "deflicker 0.5").
"""

from __future__ import annotations

import numpy as np

from pickstyle.errors import PickStyleError
from pickstyle.video.align import align_videos, as_frames
from pickstyle.video.flow import flow_warp, optical_flow
from pickstyle.video.frames import to_uint8


def deflicker(stylised, source, strength: float, method: str = "dis") -> np.ndarray:
    """Stylised frames [T, H, W, 3] (uint8, or float in [0, 1] as a pipeline returns them) smoothed
    along the motion of the source frames [T, h, w, 3] (resized to H x W for the flow if they
    differ). `strength` in [0, 1): the weight of the carried previous frame where the flow holds
    (0 returns the frames unchanged, as uint8). `method`: the optical flow ("dis" or "farneback",
    `metrics.optical_flow`). Returns uint8 [T, H, W, 3]."""
    if not 0 <= strength < 1:
        raise PickStyleError(f"deflicker strength {strength:g}: must be in [0, 1)")
    sty, src = as_frames(stylised, "stylised"), as_frames(source, "source")
    if len(sty) != len(src):
        raise PickStyleError(f"deflicker: the stylised video has {len(sty)} frames, the source {len(src)}")
    sty, src, _ = align_videos(sty, src, size=sty.shape[1:3])
    if strength == 0 or len(sty) < 2:
        return sty
    out, carry = sty.copy(), sty[0].astype(np.float32)  # the carry stays in float: no rounding drift
    for t in range(1, len(sty)):  # one pair's flows at a time: memory stays at a few frames
        back, forth = optical_flow(src[t], src[t - 1], method), optical_flow(src[t - 1], src[t], method)
        carried, valid = flow_warp(carry, back, forth)  # frame t-1 brought to frame t
        weight = (strength * valid)[..., None]
        carry = (1 - weight) * sty[t] + weight * carried
        out[t] = to_uint8(carry, peak=255)
    return out
