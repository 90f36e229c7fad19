"""The method: `PickStylePipeline` (Wan2.1-VACE with noise initialisation from the source and
CS-CFG), guidance as pure tensor functions, style adapters, samplers and the style presets."""

from pickstyle._lazy import lazy_exports

_EXPORTS = {
    "PickStylePipeline": "pickstyle.pipeline.pipeline",
    "load_pipeline": "pickstyle.pipeline.pipeline",
    "compute_dtype": "pickstyle.pipeline.pipeline",
    "WAN_NEGATIVE_PROMPT": "pickstyle.pipeline.pipeline",
    "make_scheduler": "pickstyle.pipeline.schedulers",
    "with_lead_in": "pickstyle.pipeline.lead_in",
    "mean_of_samples": "pickstyle.pipeline.ensemble",
    "STYLE_PRESETS": "pickstyle.pipeline.styles",
    "get_style": "pickstyle.pipeline.styles",
    "add_style_adapter": "pickstyle.pipeline.adapters",
    "save_style_adapter": "pickstyle.pipeline.adapters",
    "load_style_adapter": "pickstyle.pipeline.adapters",
    "export_authors_format": "pickstyle.pipeline.adapters",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
