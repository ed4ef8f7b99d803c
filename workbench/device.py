"""Device and numeric precision choice, shared by the trainer, the CIL strategies and the RL students."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from workbench.errors import WorkbenchError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")


def choose_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda > mps > cpu; ``cuda:1`` style names are accepted. Unavailable device → error."""
    base = name.split(":")[0]
    if base not in DEVICES:
        raise WorkbenchError(f"bad value for 'device': {name!r}; valid: {', '.join(DEVICES)} (or cuda:N)")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise WorkbenchError("device=cuda requested but no CUDA GPU is visible; use device=cpu or device=auto")
    if ":" in name:
        index = name.split(":", 1)[1]
        count = torch.cuda.device_count() if base == "cuda" else 1
        if not index.isdigit() or int(index) >= count:
            raise WorkbenchError(f"bad value for 'device': {name!r}; valid indices are 0..{count - 1}")
    if base == "mps" and not torch.backends.mps.is_available():
        raise WorkbenchError("device=mps requested but MPS is not available; use device=cpu or device=auto")
    return torch.device(name)


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype for a precision name (``None`` for fp32)."""
    if precision not in PRECISIONS:
        raise WorkbenchError(f"bad value for 'precision': {precision!r}; valid: {', '.join(PRECISIONS)}")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Mixed-precision context for forward passes; a no-op for fp32."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 (bf16 and fp32 need no loss scaling)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
