"""Style presets: the authors' nine styles with their prompt prefix and hand-picked skip.

Skip values are from the paper's appendix (Table 3), for 20 sampling steps: styles that look
more like the input RGB take more skip (closer to the source), abstract ones less.
"""

from __future__ import annotations

from dataclasses import dataclass

from pickstyle.errors import PickStyleError
from pickstyle.settings import style_prompt


@dataclass(frozen=True)
class StylePreset:
    name: str  # display name, used in the prompt prefix
    skip_steps: int  # of 20 steps

    @property
    def prefix(self) -> str:
        return f"{self.name} style. "

    def prompt(self, description: str) -> str:
        """The full prompt, `"<Style> style. <description>"`."""
        return style_prompt(self.name, description.strip())


STYLE_PRESETS: dict[str, StylePreset] = {
    "anime": StylePreset("Anime", 3),
    "pixar": StylePreset("Pixar", 6),
    "clay": StylePreset("Clay", 0),
    "3d-chibi": StylePreset("3D Chibi", 2),
    "lego": StylePreset("LEGO", 2),
    "macaron": StylePreset("Macaron", 2),
    "origami": StylePreset("Origami", 2),
    "rick-morty": StylePreset("Rick and Morty", 0),
    "vector": StylePreset("Vector", 1),
}


def get_style(name: str) -> StylePreset:
    """Look a preset up by key, case- and separator-insensitively (`LEGO`, `3d_chibi`, `Rick & Morty`)."""
    key = name.strip().lower().replace("_", "-").replace(" ", "-").replace("&", "").replace("--", "-")
    key = {"rick-and-morty": "rick-morty", "3dchibi": "3d-chibi", "chibi": "3d-chibi"}.get(key, key)
    if key not in STYLE_PRESETS:
        raise PickStyleError(f"--style {name!r}: unknown style; choose from {', '.join(STYLE_PRESETS)}")
    return STYLE_PRESETS[key]
