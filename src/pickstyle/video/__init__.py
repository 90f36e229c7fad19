"""Video in and out: reading and writing containers, frame geometry, two videos aligned, optical
flow and the deflicker post-process."""

from pickstyle._lazy import lazy_exports

_EXPORTS = {
    "read_video": "pickstyle.video.io",
    "write_video": "pickstyle.video.io",
    "align_videos": "pickstyle.video.align",
    "optical_flow": "pickstyle.video.flow",
    "deflicker": "pickstyle.video.postprocess",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
