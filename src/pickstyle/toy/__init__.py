"""The toy world: styles with an exact ground truth and procedural scenes, the bundled toy model
pickstyle-tiny, its quality benchmark and the demo."""

from pickstyle._lazy import lazy_exports

_EXPORTS = {
    "STYLES": "pickstyle.toy.scenes",
    "style_prompt": "pickstyle.settings",
    "make_scene_clip": "pickstyle.toy.scenes",
    "TOY_MODEL": "pickstyle.toy.model",
    "DEMO_CLIP": "pickstyle.toy.model",
    "load_toy_pipeline": "pickstyle.toy.model",
    "toy_stylize": "pickstyle.toy.model",
    "run_demo": "pickstyle.toy.demo",
    "run_quality_benchmark": "pickstyle.toy.quality",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
