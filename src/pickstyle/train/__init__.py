"""Training a context-style adapter: paired-image datasets, the synthetic camera motion, the
settings, the trainer and the clip preview."""

from pickstyle._lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "pickstyle.train.config",
    "train": "pickstyle.train.trainer",
    "scan_datasets": "pickstyle.train.data",
    "motion_pair": "pickstyle.train.motion",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
