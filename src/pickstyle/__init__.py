"""PickStyle: video-to-video style transfer with context-style adapters on Wan2.1-VACE.

Heavy modules (torch, diffusers) load on first use of a name, so `import pickstyle` and
`pickstyle --help` stay fast.
"""

__version__ = "0.1.0"

_LAZY = {
    "PickStylePipeline": "pickstyle.pipeline",
    "read_video": "pickstyle.video",
    "write_video": "pickstyle.video",
    "PickStyleError": "pickstyle.errors",
    "STYLE_PRESETS": "pickstyle.styles",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pickstyle' has no attribute {name!r}")
