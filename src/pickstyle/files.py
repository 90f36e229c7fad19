"""Atomic file output: write beside the target, rename into place, leave nothing on failure."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import PickStyleError


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
