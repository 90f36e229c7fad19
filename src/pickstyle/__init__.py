"""PickStyle: video-to-video style transfer with context-style adapters on Wan2.1-VACE.

Heavy modules (torch, diffusers) load on first use of a name, so `import pickstyle` and
`pickstyle --help` stay fast.
"""

__version__ = "0.1.0"

from pickstyle._lazy import lazy_exports

_EXPORTS = {
    "PickStylePipeline": "pickstyle.pipeline.pipeline",
    "read_video": "pickstyle.video.io",
    "write_video": "pickstyle.video.io",
    "PickStyleError": "pickstyle.errors",
    "STYLE_PRESETS": "pickstyle.pipeline.styles",
}
__all__ = ["__version__", *_EXPORTS]
__getattr__ = lazy_exports(__name__, _EXPORTS)
