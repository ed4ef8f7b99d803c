"""One run of a sweep, in its own process: ``python -m workbench.sweep.runner --threads N -- COMMAND ARGS...``.

The child pins its CPU threads (``OMP_NUM_THREADS``, MKL's, and ``torch.set_num_threads``) to the sweep's
cores ÷ jobs before torch starts, then runs the command exactly as ``workbench COMMAND ARGS...`` would: its
own run directory, its own ``--resume``, its own exit status (0 done, 2 bad input, 130 interrupted).

Also here: what the next attempt of a run is (skip a finished run, ``--resume`` an interrupted one, start a
fresh one), shared by the local pool and the SLURM jobs, and :class:`RunTask`, the picklable job that
submitit runs on a SLURM node (requeued with ``--resume`` on pre-emption or time-out).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.runs import CONFIG_FILE, finished_run, load_summary, same_config

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
WARM_MODULES = ("torch", "torchvision", "workbench.plots", "torch.utils.tensorboard", "sklearn.datasets")


def thread_env(threads: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child run: ``base`` (default: this process's) with the thread counts pinned."""
    env = dict(os.environ if base is None else base)
    env.update({v: str(threads) for v in THREAD_VARS})
    return env


def child_command(argv: list[str], threads: int) -> list[str]:
    """The command line that runs ``workbench ARGV`` in a fresh interpreter with ``threads`` CPU threads."""
    return [sys.executable, "-m", "workbench.sweep.runner", "--threads", str(threads), "--", *argv]


def preload_modules(config_spec: str, run_spec: str) -> list[str]:
    """What the warm parent of the local pool imports once (torch, the command's modules, and what most runs
    load later: plots, TensorBoard's writer, sklearn's datasets), so a run's process starts without paying
    those imports again (seconds per run). A module that is not installed is skipped."""
    mods = [*WARM_MODULES, config_spec.split(":")[0], run_spec.split(":")[0]]
    return list(dict.fromkeys(mods))


def forked_run(argv: list[str], threads: int, log: str) -> None:
    """Body of a run's process forked from the warm parent: own session, output to the log, exit status of
    the command (``multiprocessing`` turns ``SystemExit(code)`` into the process's exit code)."""
    os.setsid()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.exit(main(["--threads", str(threads), "--", *argv]))


def run_dirs(folder: str | Path) -> list[Path]:
    """Run directories of one grid point (a folder per point), oldest first."""
    folder = Path(folder)
    return sorted(d for d in folder.iterdir() if (d / CONFIG_FILE).is_file()) if folder.is_dir() else []


def resumable_dir(folder: str | Path) -> Path | None:
    """The newest unfinished run of the point that has a checkpoint to continue from."""
    for d in reversed(run_dirs(folder)):
        ckpt = d / "checkpoints"
        if not _complete(d) and ckpt.is_dir() and any(ckpt.iterdir()):
            return d
    return None


def _complete(run_dir: Path) -> bool:
    """A ``summary.json`` that does not say ``"complete": false`` (a run that writes partial summaries)."""
    summary = load_summary(run_dir)
    return summary is not None and summary.get("complete", True) is not False


def finished_dir(folder: str | Path, seed: int, cfg: Any = None) -> Path | None:
    """A finished run of the point: :func:`workbench.runs.finished_run` (``summary.json``, same seed and config
    up to bookkeeping keys); for a command whose summary does not record the seed, the newest run with a
    ``summary.json`` and the same config (the folder is the point's own). A summary marked
    ``"complete": false`` is a run still to be resumed."""
    done = finished_run(folder, seed, cfg)
    if done is not None and _complete(done):
        return done
    for d in reversed(run_dirs(folder)):
        if _complete(d) and (cfg is None or same_config(d, cfg)):
            return d
    return None


def next_attempt(command: list[str], fresh_argv: list[str], folder: str | Path, seed: int, cfg: Any = None):
    """``("done", dir, [])``, ``("resume", dir, argv)`` or ``("fresh", None, argv)`` for a grid point."""
    done = finished_dir(folder, seed, cfg)
    if done is not None:
        return "done", done, []
    partial = resumable_dir(folder)
    if partial is not None:
        return "resume", partial, [*command, "--resume", str(partial)]
    return "fresh", None, fresh_argv


@dataclass
class RunTask:
    """A SLURM job of the sweep (pickled by submitit): one grid point, its attempts, and requeue on pre-emption.

    Each attempt is a child process (:func:`child_command`); on SLURM's time-out or pre-emption signal submitit
    calls :meth:`checkpoint`, which stops the child with SIGTERM (the command saves and exits 130) and asks
    for the same task again, whose next attempt is the ``--resume`` of that run.
    """

    command: list[str]
    fresh_argv: list[str]
    folder: str
    seed: int
    threads: int
    retries: int
    log: str
    distributed: bool = False
    _proc: Any = field(default=None, repr=False, compare=False)

    def __call__(self) -> dict[str, Any]:
        env = thread_env(self.threads)
        if self.distributed:  # one task per GPU: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT for torch
            import submitit

            dist_env = submitit.helpers.TorchDistributedEnvironment().export()
            env.update({k: str(v) for k, v in vars(dist_env).items() if k.isupper()})
            env.update(
                {
                    k: os.environ[k]
                    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
                    if k in os.environ
                }
            )
        rc, attempts, start = 1, 0, time.perf_counter()
        for _ in range(self.retries + 1):
            state, run_dir, argv = next_attempt(self.command, self.fresh_argv, self.folder, self.seed)
            if state == "done":
                return {"exit_code": 0, "run_dir": str(run_dir), "attempts": attempts}
            attempts += 1
            with open(self.log, "a") as log:
                self._proc = subprocess.Popen(
                    child_command(argv, self.threads), env=env, stdout=log, stderr=subprocess.STDOUT
                )
                rc = self._proc.wait()
            if self.distributed:
                break
        state, run_dir, _ = next_attempt(self.command, self.fresh_argv, self.folder, self.seed)
        latest = run_dirs(self.folder)
        where = run_dir if run_dir is not None else (latest[-1] if latest else None)
        seconds = round(time.perf_counter() - start, 2)
        return {
            "exit_code": 0 if state == "done" else rc,
            "run_dir": str(where or ""),
            "attempts": attempts,
            "seconds": seconds,
        }

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's hook on pre-emption/time-out: let the command save, then requeue this task."""
        import submitit

        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=80)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        fresh = RunTask(**{k: getattr(self, k) for k in self.__dataclass_fields__ if k != "_proc"})
        return submitit.helpers.DelayedSubmission(fresh)


def main(argv: list[str] | None = None) -> int:
    """Child entry point: ``--threads N -- ARGS...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    threads = 1
    if argv[:1] == ["--threads"]:
        threads = max(1, int(argv[1]))
        argv = argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)
    from workbench.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
