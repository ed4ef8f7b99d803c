"""File-system faults: an unwritable run root (read-only, a file, a full disk) is one line, a non-zero exit and
no run directory; a disk that fills mid-run leaves the last checkpoint intact and resumable; runs created in
the same instant never collide. A real tmpfs is mounted where the test may (root); elsewhere the fault is
simulated by raising the same OSError."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import workbench.runs as runs
from workbench.checkpoint import load_checkpoint
from workbench.cli import main
from workbench.errors import WorkbenchError

BASE = ["train", "dataset=digits", "model=mlp", "batch_size=64", "lr=0.1", "progress=false", "subset=256"]


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "4m", readonly: bool = False) -> Iterator[bool]:
    """Mount a small tmpfs at ``path``; yields whether it is a real mount (False: a plain folder)."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    ok = (
        os.geteuid() == 0
        and subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True).returncode
        == 0
    )
    try:
        yield ok
    finally:
        if ok:
            subprocess.run(["umount", str(path)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write a file in ``folder`` until the file system is full."""
    filler = folder / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def refusal(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_run_root_that_is_a_file(tmp_path, capsys):
    root = tmp_path / "runs"
    root.write_text("not a folder")
    assert main([*BASE, f"run_root={root}"]) == 2
    assert "is a file, not a folder" in refusal(capsys) and "run_root" in capsys.readouterr().err + "run_root"
    assert root.read_text() == "not a folder"
    assert main([*BASE, f"run_root={root / 'sub'}"]) == 2
    assert "is a file, not a folder" in refusal(capsys)


def test_read_only_run_root(tmp_path, capsys, monkeypatch):
    root = tmp_path / "ro"
    with tmpfs(root, readonly=True) as real:
        if not real:
            original = Path.mkdir

            def refuse(self, *a, **k):
                if str(self).startswith(str(root)):
                    raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
                return original(self, *a, **k)

            monkeypatch.setattr(Path, "mkdir", refuse)
        assert main([*BASE, f"run_root={root}"]) == 2
        line = refusal(capsys)
        assert "Read-only file system" in line and f"run_root={root}" in line
        assert list(root.iterdir()) == []


def test_full_disk_at_creation_leaves_no_run_directory(tmp_path, capsys, monkeypatch):
    root = tmp_path / "full"
    with tmpfs(root, size="1m") as real:
        if real:
            (root / "runs").mkdir()
            fill(root)
        else:
            (root / "runs").mkdir(parents=True)

            def no_space(fd):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            monkeypatch.setattr(os, "fsync", no_space)
        assert main([*BASE, f"run_root={root / 'runs'}"]) == 2
        assert "No space left on device" in refusal(capsys)
        assert list((root / "runs").iterdir()) == []


def test_disk_full_mid_run_keeps_the_last_checkpoint_resumable(tmp_path, capsys, monkeypatch):
    import workbench.trainer as trainer_module

    root = tmp_path / "disk"
    with tmpfs(root, size="16m") as real:
        calls = []
        real_save = trainer_module.save_checkpoint

        def save_then_fill(path, payload, *a, **k):
            calls.append(path)
            if len(calls) == 2:  # the disk fills up during the second epoch
                if real:
                    fill(root)
                else:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            return real_save(path, payload, *a, **k)

        monkeypatch.setattr(trainer_module, "save_checkpoint", save_then_fill)
        assert main([*BASE, "epochs=3", f"run_root={root / 'runs'}"]) == 2
        assert "No space left on device" in refusal(capsys)
        (run,) = [p.parent for p in (root / "runs").rglob("config.yaml")]
        ckpt = run / "checkpoints" / "last.pt"
        assert load_checkpoint(ckpt)["epoch"] == 1
        assert not [p for p in ckpt.parent.iterdir() if p.name.endswith(".tmp")]
        (root / "filler").unlink(missing_ok=True)  # space freed
        monkeypatch.setattr(trainer_module, "save_checkpoint", real_save)
        assert main(["train", "--resume", str(run)]) == 0
        assert load_checkpoint(ckpt)["epoch"] == 3


def test_runs_created_in_the_same_instant_never_collide(tmp_path, monkeypatch):
    monkeypatch.setattr(runs.time, "strftime", lambda fmt, *a: "20260101-000000")
    cfg = SimpleNamespace(run_root=str(tmp_path / "runs"), seed=0)
    barrier = threading.Barrier(30)
    made, errors = [], []

    def create() -> None:
        barrier.wait()
        try:
            made.append(runs._make_run_dir(Path(cfg.run_root), "train", "same", cfg.seed)[0])
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(made)) == 30
    assert all((p / "checkpoints").is_dir() for p in made)


def test_storage_errors_of_appended_metrics_are_one_line(tmp_path, monkeypatch):
    from workbench.tracking import RunLogger

    logger = RunLogger(tmp_path, enabled=True)
    logger._writer = SimpleNamespace(add_scalar=lambda *a: None, close=lambda: None, flush=lambda: None)

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("builtins.open", no_space)
    with pytest.raises(WorkbenchError, match=r"cannot write .*metrics.jsonl \(No space left on device\)"):
        logger.scalars({"loss": torch.tensor(1.0)}, 1)


def test_sigint_stops_a_command_started_in_the_background_by_a_script(tmp_path):
    """bash starts a background job with SIGINT ignored; the CLI still saves and exits 130 on ``kill -INT``."""
    import sys

    root = tmp_path / "runs"
    # the RL loop has no handler of its own: without the CLI's, Python's default SIGINT handler is not installed
    args = "rl train env=CartPole-v1 method=independent students=2 total_steps=10000000 checkpoint_every=0"
    args += " eval_episodes=0 progress=false log_every=64 threads=1"
    script = (
        f"{sys.executable} -m workbench.cli {args} run_root={root} & pid=$!\n"
        f"for i in $(seq 600); do ls {root}/rl/*/*/metrics.jsonl >/dev/null 2>&1 && break; sleep 0.2; done\n"
        "sleep 1; kill -INT $pid\n"
        "for i in $(seq 300); do kill -0 $pid 2>/dev/null || break; sleep 0.2; done\n"
        "kill -0 $pid 2>/dev/null && { kill -KILL $pid; echo status=ignored-sigint; exit; }\n"
        "wait $pid; echo status=$?\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert "status=130" in res.stdout, res.stdout + res.stderr
    assert "--resume" in res.stderr
