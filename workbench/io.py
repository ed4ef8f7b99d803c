"""Atomic file writes: temporary file in the same directory, fsync, rename.

A reader never sees a half-written checkpoint, config or result file, even after a crash or Ctrl-C. A write
that the file system refuses (full disk, quota, read-only, permissions) raises :class:`StorageError`: one
line naming the file, the previous version of the file left intact.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from workbench.errors import WorkbenchError

#: errno values that mean "this storage cannot take the write", not a bug
STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST, errno.EIO}
)


class StorageError(WorkbenchError, OSError):
    """A file could not be written because of the storage (full, read-only, not a folder...)."""


def storage_error(path: str | Path, exc: OSError) -> OSError:
    """``exc`` as a one-line :class:`StorageError` naming ``path`` when the storage refused the write, else ``exc``."""
    if isinstance(exc, StorageError) or exc.errno not in STORAGE_ERRNOS:
        return exc
    reason = exc.strerror or str(exc)
    err = StorageError(f"cannot write {path} ({reason}); free space or pass run_root=DIR on a writable disk")
    err.errno = exc.errno
    return err


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temporary binary file beside ``path``, then atomically move it to ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise storage_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise storage_error(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically; NaN and ±inf become ``null`` (valid JSON)."""
    text = json.dumps(finite_or_none(obj), indent=2, sort_keys=False, default=_jsonable, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float (in nested dicts, lists and tuples) replaced by ``None``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return finite_or_none(obj.item())
    return obj


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return finite_or_none(obj.tolist())
    if hasattr(obj, "item"):
        return finite_or_none(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
