"""Reading pickled dataset files without executing code.

A pickle names the callables that rebuild its objects, so ``pickle.load`` on a tampered file runs whatever
it names (``os.system``, ``builtins.open``...). :class:`RestrictedUnpickler` resolves only an allow-list of
globals and refuses every other one before it is called. :data:`NUMPY_ARRAYS` is what pickled numpy arrays
need (numpy 1 and 2 module paths, plus ``_codecs.encode`` for bytes in protocol-2 pickles); a new
pickled format adds the globals its files hold, nothing more.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

NUMPY_ARRAYS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the ``(module, name)`` globals in ``allowed``; any other raises
    :class:`pickle.UnpicklingError` naming it, before it is called."""

    def __init__(self, file: IO[bytes], allowed: Iterable[tuple[str, str]] = NUMPY_ARRAYS, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.allowed = frozenset(allowed)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: not part of this dataset format")
        return super().find_class(module, name)


def restricted_load(path: str | Path, allowed: Iterable[tuple[str, str]] = NUMPY_ARRAYS, encoding: str = "latin1"):
    """Unpickle ``path`` with :class:`RestrictedUnpickler` (``latin1`` reads Python 2 strings as str)."""
    with open(path, "rb") as f:
        return RestrictedUnpickler(f, allowed, encoding=encoding).load()
