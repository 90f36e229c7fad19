"""Scores of a stylised video against its source (`pickstyle eval`): the metrics and their
registry, CLIP and DINO from local folders, and the report."""

from pickstyle._lazy import lazy_exports

_EXPORTS = {
    "evaluate": "pickstyle.eval.metrics",
    "evaluate_frames": "pickstyle.eval.metrics",
    "register_metric": "pickstyle.eval.metrics",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
