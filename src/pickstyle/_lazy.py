"""Lazy exports for the packages: a name is imported from its module on first use, so importing a
package (and `pickstyle --help`) does not load torch or diffusers."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, names: dict[str, str]):
    """A module `__getattr__` that serves `names` ({name: module}) from their modules."""

    def __getattr__(name):
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
