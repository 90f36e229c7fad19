"""Atomic file output: write beside the target, rename into place, leave nothing on failure."""

from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

from pickstyle.errors import PickStyleError


@contextmanager
def atomic_output(path: str | os.PathLike):
    """Yield a temporary path beside `path` (same suffix, so writers pick the right format);
    on success it is renamed to `path` with the usual permissions (0666 less the umask), on any
    error it is removed and `path` is left as it was. The parent folder is created if missing."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=path.suffix, dir=path.parent)
    except OSError as err:
        raise PickStyleError(f"{path.parent}: cannot write there ({err.strerror or err})") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


def natural_key(name: str):
    """Sort key that orders numbers by value: 'f2' before 'f10'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)], name


def image_files(folder: Path) -> list[Path]:
    """The image files of `folder` in natural order, hidden ones ('.' or '_' first) skipped."""
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith((".", "_")) and p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    return sorted(files, key=lambda p: natural_key(p.name))
