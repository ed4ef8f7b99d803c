"""DDP helpers: a process group when started by ``torchrun`` (gloo on CPU, nccl on GPU), no-ops otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device) -> None:
    """Join the process group that ``torchrun`` describes in the environment (once)."""
    if not launched_by_torchrun() or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """Each rank's own GPU under torchrun; ``device`` unchanged otherwise."""
    if device.type == "cuda" and launched_by_torchrun():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


#: stderr markers of a launch that failed in rendezvous (a port taken, a connect that timed out under load),
#: not in the command: such a launch is retried.
_RENDEZVOUS_FAILURES = (
    "EADDRINUSE",
    "Address already in use",
    "DistNetworkError",
    "RendezvousConnectionError",
    "Connection refused",
    "Connection reset by peer",
    "Socket Timeout",
)


def run_torchrun(
    args: list[str],
    nproc: int = 2,
    *,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    attempts: int = 3,
) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node=N ARGS`` on this machine, output captured.

    ``--standalone`` lets the rendezvous pick a free port itself (no probe-then-bind race); a launch whose
    stderr shows a rendezvous or socket failure is retried up to ``attempts`` times; any other failure returns.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    for attempt in range(1, attempts + 1):
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        if res.returncode == 0 or attempt == attempts or not any(m in res.stderr for m in _RENDEZVOUS_FAILURES):
            return res
    raise AssertionError("unreachable")
