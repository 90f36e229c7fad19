"""Stylise settings, resolved in one place and checked once; and the prompt format
("<style> style. <description>") the settings of a style are found by.

A setting comes from, first to last: the user's value (a CLI flag or a keyword); the style
preset's skip (`--style`); the model folder's `pickstyle.json` entry for the style the prompt
names ("<style> style. ...", its `style_settings`); that file's model-wide value; `DEFAULTS`
(the authors' settings for Wan2.1-VACE). The CLI, the toy model's benchmark and the demo all go
through `resolve`, and `call_arguments` turns the result into `PickStylePipeline.__call__`'s
arguments. Imports nothing heavy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pickstyle.errors import PickStyleError

SETTINGS_FILE = "pickstyle.json"  # a model folder's recommended settings: a JSON object of SETTING_TYPES keys
DEFAULTS = {
    "steps": 20, "skip": 4, "text_scale": 5.0, "context_scale": 4.0, "lead_in": 0, "guidance_end": 1.0,
    "samples": 1, "negative_prompt": None, "size": "480p", "frames": None, "fps": 16.0, "scheduler": "dpm++",
    "shift": 16.0, "max_sequence_length": 512, "adapter": None,
}  # fmt: skip  (skip is given for 20 steps and scaled to the steps used; negative_prompt None: Wan's)
SETTING_TYPES = {
    "size": str, "frames": int, "steps": int, "skip": int, "text_scale": float, "context_scale": float,
    "scheduler": str, "shift": float, "fps": float, "negative_prompt": str, "adapter": str, "name": str,
    "styles": list, "description": str, "max_sequence_length": int, "style_settings": dict, "lead_in": int,
    "guidance_end": float, "samples": int,
}  # fmt: skip
# what a style's entry in "style_settings" may set
STYLE_SETTING_KEYS = ("skip", "text_scale", "context_scale", "lead_in", "guidance_end", "negative_prompt", "steps", "samples")


def problem(key: str, value) -> str | None:
    """What is wrong with `value` for the setting `key` (its range; types are checked apart), or None."""
    if key in ("steps", "samples", "max_sequence_length") and value < 1:
        return "must be a whole number >= 1"
    if key == "skip" and value < 0:
        return "must be a whole number of steps >= 0"
    if key == "lead_in" and (value < 0 or value % 4):
        return "must be a multiple of 4 frames >= 0 (e.g. 0, 4, 8)"
    if key == "guidance_end" and not 0 < value <= 1:
        return "must be a fraction of the steps in (0, 1]"
    if key in ("text_scale", "context_scale") and not (math.isfinite(value) and value >= 0):
        return "must be a finite number >= 0"
    if key == "frames" and value is not None and (value < 1 or (value - 1) % 4):
        return "must be 4k+1 (e.g. 17, 49, 81)"
    if key in ("fps", "shift") and not (math.isfinite(value) and value > 0):
        return "must be positive"
    return None


def _check_file_value(path: Path, name: str, key: str, value) -> None:
    kind = SETTING_TYPES[key]
    ok = isinstance(value, (int, float)) if kind is float else isinstance(value, kind)
    if isinstance(value, bool) or not ok:
        raise PickStyleError(f"{path}: {name} = {value!r} is not {'a number' if kind is float else kind.__name__}")
    reason = problem(key, value)
    if reason:
        raise PickStyleError(f"{path}: {name} = {value!r} {reason}")


def model_settings(model: str) -> dict:
    """The recommended settings in `model`/pickstyle.json ({} for hub ids and folders without one),
    every key and value checked; "adapter" becomes an absolute path."""
    path = Path(model) / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PickStyleError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(settings, dict):
        raise PickStyleError(f"{path}: expected a JSON object")
    for key, value in settings.items():
        if key not in SETTING_TYPES:
            raise PickStyleError(f"{path}: unknown key {key!r} (known: {', '.join(SETTING_TYPES)})")
        _check_file_value(path, key, key, value)
    for style, entry in settings.get("style_settings", {}).items():
        if not isinstance(entry, dict):
            raise PickStyleError(f"{path}: style_settings[{style!r}] = {entry!r} is not an object")
        for key, value in entry.items():
            if key not in STYLE_SETTING_KEYS:
                raise PickStyleError(f"{path}: style_settings[{style!r}] has unknown key {key!r} "
                                     f"(known: {', '.join(STYLE_SETTING_KEYS)})")  # fmt: skip
            _check_file_value(path, f"style_settings[{style!r}].{key}", key, value)
    if "adapter" in settings:
        adapter = (path.parent / settings["adapter"]).resolve()
        if not adapter.exists():
            raise PickStyleError(f"{path}: adapter {settings['adapter']!r} does not exist in {path.parent}")
        settings["adapter"] = str(adapter)
    return settings


def style_prompt(style: str, description: str) -> str:
    """The prompt of a style, `"<style> style. <description>"`: the format the adapters are trained on."""
    return f"{style} style. {description}"


def style_from_prompt(prompt: str) -> str:
    """The text before the first " style." of a prompt ("anime style. A cat" -> "anime"),
    or "unknown" when there is none or it is not a short name (over 4 words, or a sentence)."""
    head, sep, _ = prompt.partition(" style.")
    head = head.strip()
    if sep and head and len(head.split()) <= 4 and "\n" not in head and ". " not in head:
        return head
    return "unknown"


def prompt_settings(settings: dict, prompt: str) -> dict:
    """A model's settings for one prompt: the `style_settings` entry of the style the prompt names
    ("<style> style. ...", any case) replaces the model-wide values."""
    named = style_from_prompt(prompt.strip()).lower()
    for style, entry in settings.get("style_settings", {}).items():
        if style.lower() == named:
            return {**settings, **entry}
    return settings


def scale_skip(skip_steps: int, num_steps: int) -> int:
    """A skip given for 20 steps (a preset's, a model's) at another step count, rounded."""
    return min(num_steps - 1, round(skip_steps * num_steps / 20))


def resolve(file_settings: dict, prompt: str, values: dict | None = None, preset=None) -> dict:
    """Every key of DEFAULTS for one prompt: `values` (the user's; None means unset), else the
    preset's skip, else `file_settings` (a model's pickstyle.json, its entry for the prompt's
    style first), else DEFAULTS; the skip scaled to the steps. Raises PickStyleError naming the
    first bad value (`--key value: reason`)."""
    values = {k: v for k, v in (values or {}).items() if v is not None}
    unknown = set(values) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"resolve: not settings: {', '.join(sorted(unknown))}")
    file_settings = prompt_settings(file_settings, prompt)
    out = {key: values.get(key, file_settings.get(key, default)) for key, default in DEFAULTS.items()}
    if "skip" not in values:
        out["skip"] = scale_skip(preset.skip_steps if preset else file_settings.get("skip", DEFAULTS["skip"]), out["steps"])
    for key, value in out.items():
        reason = problem(key, value) if value is not None else None
        if reason:
            shown = f"{value:g}" if isinstance(value, float) else value
            raise PickStyleError(f"--{key.replace('_', '-')} {shown}: {reason}")
    if out["skip"] >= out["steps"]:
        raise PickStyleError(f"--skip {out['skip']}: must be less than --steps {out['steps']}")
    return out


def call_arguments(settings: dict) -> dict:
    """The keyword arguments of `with_lead_in(pipe, video, ...)` (`PickStylePipeline.__call__`'s
    and the lead-in) for resolved `settings` (see `resolve`)."""
    return {
        "negative_prompt": settings["negative_prompt"],
        "num_inference_steps": settings["steps"],
        "skip_steps": settings["skip"],
        "lead_in_frames": settings["lead_in"],
        "num_samples": settings["samples"],
        "guidance_end": settings["guidance_end"],
        "text_guidance_scale": settings["text_scale"],
        "context_guidance_scale": settings["context_scale"],
        "max_sequence_length": settings["max_sequence_length"],
    }
