"""Run directories: ``runs/<group>/<name>/<YYYYmmdd-HHMMSS>-s<seed>/``.

Each holds ``run.json`` (which command made it, so a copied or moved run is still recognised),
``config.yaml`` (fully resolved), TensorBoard event files, ``metrics.jsonl`` (one JSON object per logged
step), ``checkpoints/``, ``plots/`` and ``summary.json``. Only the main rank writes.

A resumed run is a transaction until its state is restored (:meth:`Run.commit`): everything the attempt
changed is rolled back if it fails before then (:meth:`Run.rollback`), so a refused ``--resume`` leaves
the directory byte for byte as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbench import distributed
from workbench.config import to_dict, to_yaml
from workbench.errors import WorkbenchError
from workbench.io import atomic_write_json, atomic_write_text
from workbench.tracking import RunLogger

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
RUN_FILE = "run.json"
RUN_FORMAT = "workbench-run/1"
SNAPSHOT_DIR = ".resume-snapshot"
#: files up to this size are copied into a resume snapshot (they may be rewritten in place); larger ones
#: (checkpoints, written atomically) are hard-linked
SNAPSHOT_COPY_BYTES = 8 << 20


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-") or "run"


@dataclass
class Run:
    """One run directory and its logger. ``resumed`` tells a command to continue from its checkpoint."""

    dir: Path
    group: str
    resumed: bool = False
    is_main: bool = True
    command: str | None = None
    created_parents: list[Path] = field(default_factory=list, repr=False)
    _logger: RunLogger | None = field(default=None, repr=False)
    _snapshot: _Snapshot | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        """``train``, ``rl``, ``compress kd``...: the command that made the run (its group if unknown)."""
        return f"{self.group} {self.command}" if self.command else self.group

    @property
    def logdir(self) -> Path:
        """Where ``tensorboard --logdir`` shows this run beside its siblings: the run root when the run sits
        at ``<root>/<group>/<name>/<stamp>``, else the run directory itself (e.g. after a move)."""
        if self.dir.resolve().parent.parent.name == _slug(self.group):
            return self.dir.parent.parent.parent
        return self.dir

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def plots(self) -> Path:
        return self.dir / "plots"

    @property
    def logger(self) -> RunLogger:
        if self._logger is None:
            self._logger = RunLogger(self.dir, enabled=self.is_main)
        return self._logger

    def resume_logging_at(self, step: int) -> None:
        """Continue the curves after ``step``: later entries of metrics.jsonl and TensorBoard are dropped."""
        self.commit()
        if self._logger is not None:
            self._logger.close()
        self._logger = RunLogger(self.dir, enabled=self.is_main, purge_after=step)

    def begin_resume(self) -> None:
        """Record the directory's state, so that a resume that fails before :meth:`commit` changes nothing."""
        if self.is_main and self._snapshot is None:
            self._snapshot = _Snapshot(self.dir)
            _RESUMING.append(self)

    def commit(self) -> None:
        """The resumed state is restored: keep what the command writes from now on; drop orphaned temporary
        files that a killed process left behind."""
        if self._snapshot is not None:
            self._snapshot.discard(orphans=True)
            self._snapshot = None
            _RESUMING.remove(self)

    def rollback(self) -> None:
        """Put back every file and folder as :meth:`begin_resume` found them (no-op after :meth:`commit`)."""
        self.close()
        if self._snapshot is not None:
            self._snapshot.restore()
            self._snapshot = None
            _RESUMING.remove(self)

    def save_config(self, cfg: Any) -> None:
        if self.is_main:
            atomic_write_text(self.dir / CONFIG_FILE, to_yaml(cfg))

    def write_summary(self, summary: dict[str, Any]) -> Path:
        """Write ``summary.json`` atomically (main rank only)."""
        path = self.dir / SUMMARY_FILE
        if self.is_main:
            atomic_write_json(path, summary)
        return path

    def close(self) -> None:
        if self._logger is not None:
            self._logger.close()


#: resumed runs not yet committed; a sub-run created inside one (a compare's next method) commits it, so
#: finished sub-runs are never rolled back
_RESUMING: list[Run] = []


def default_name(cfg: Any, keys: tuple[str, ...]) -> str:
    """A run name from the config's own values, e.g. ``fashion-mnist_resnet20``."""
    if getattr(cfg, "name", ""):
        return _slug(cfg.name)
    values = [str(getattr(cfg, k)) for k in keys if getattr(cfg, k, None) not in (None, "")]
    return _slug("_".join(values).replace("/", "-")) if values else "run"


def create_run(group: str, cfg: Any, name: str, command: str | None = None) -> Run:
    """Create a fresh run directory (rank 0 creates it, other ranks receive its path), record which command
    made it (``run.json``) and save the config.

    A run root that cannot be written (read-only, a file, a full disk) is one WorkbenchError naming it, and
    leaves no directory behind. Two runs created in the same second get distinct suffixed directories.
    """
    path, error, created = None, "", []
    if distributed.is_main():
        try:
            path, created = _make_run_dir(Path(cfg.run_root).expanduser(), group, name, cfg.seed)
        except WorkbenchError as exc:
            error = str(exc)
    shared = distributed.broadcast_object(str(path) if path else "error:" + error)
    if shared.startswith("error:"):
        raise WorkbenchError(shared[len("error:") :] or "the main process could not create the run directory")
    run = Run(dir=Path(shared), group=group, is_main=distributed.is_main(), command=command, created_parents=created)
    for outer in [r for r in _RESUMING if r.dir.resolve() in run.dir.resolve().parents]:
        outer.commit()
    if run.is_main:
        try:
            info = {"format": RUN_FORMAT, "group": group, "command": command, "created": time.strftime("%FT%T%z")}
            atomic_write_json(run.dir / RUN_FILE, info)
            run.save_config(cfg)
        except (OSError, WorkbenchError) as exc:
            shutil.rmtree(run.dir, ignore_errors=True)
            remove_empty_dirs(created)
            raise _fs_error(Path(cfg.run_root), exc) from None
    return run


def _make_run_dir(root: Path, group: str, name: str, seed: int) -> tuple[Path, list[Path]]:
    """``root/<group>/<name>/<stamp>-s<seed>[-k]`` with its sub-folders, and the parent folders this call made;
    exclusive creation, so concurrent runs never share a directory."""
    parent = root / _slug(group) / _slug(name)
    created = [p for p in (parent, root / _slug(group), root) if not p.is_dir()]
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in range(10_000):
            path = parent / (f"{stamp}-s{seed}" + (f"-{suffix}" if suffix else ""))
            try:
                path.mkdir()
                break
            except FileExistsError:
                if not parent.is_dir():
                    raise
        else:
            raise FileExistsError(errno.EEXIST, "too many runs in one second", str(parent))
        try:
            for sub in ("checkpoints", "plots"):
                (path / sub).mkdir()
        except OSError:
            shutil.rmtree(path, ignore_errors=True)
            raise
    except OSError as exc:
        remove_empty_dirs(created)
        raise _fs_error(root, exc) from None
    return path, created


def remove_empty_dirs(folders: list[Path]) -> None:
    """Remove those of ``folders`` (deepest first) that are empty."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _fs_error(root: Path, exc: Exception) -> WorkbenchError:
    if isinstance(exc, WorkbenchError):
        return exc
    if any(p.is_file() for p in (root, *root.parents)):
        reason = f"{next(p for p in (root, *root.parents) if p.is_file())} is a file, not a folder"
    else:
        reason = getattr(exc, "strerror", None) or str(exc)
    return WorkbenchError(
        f"cannot create a run directory under run_root={root} ({reason}); pass run_root=DIR, a writable folder "
        "with free space"
    )


def read_run_info(run_dir: str | Path) -> dict:
    """``run.json`` of a run (``{}`` for a run made before it existed)."""
    path = Path(run_dir) / RUN_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) and data.get("format") == RUN_FORMAT else {}


def run_kind(run_dir: str | Path) -> str | None:
    """The command that made a run (``"train"``, ``"rl train"``, ``"compress kd"``...), read from the run
    itself, so a run copied or moved anywhere is still recognised; ``None`` when it does not say."""
    info = read_run_info(run_dir)
    if not info.get("group"):
        return None
    return f"{info['group']} {info['command']}" if info.get("command") else str(info["group"])


def open_run(run_dir: str | Path, group: str | None = None, command: str | None = None) -> tuple[Run, dict]:
    """Open an existing run directory for ``--resume``; returns the run and its saved config as a dict.

    Nothing is written. The run's kind comes from its ``run.json``, never from where it lies; a run made
    by another command is refused with one line naming it.
    """
    path = Path(run_dir)
    cfg_path = path / CONFIG_FILE
    if not cfg_path.is_file():
        raise WorkbenchError(f"{path} is not a run directory (no {CONFIG_FILE}); pass the folder a command printed")
    saved = load_config_dict(path)
    info = read_run_info(path)
    recorded_group, recorded_command = info.get("group"), info.get("command")
    if group is not None and recorded_group is not None:
        mismatch = recorded_group != group or (command and recorded_command and recorded_command != command)
        if mismatch:
            found = run_kind(path)
            want = f"{group} {command}" if command else group
            raise WorkbenchError(
                f"{path} is a '{found}' run, not a '{want}' run; resume it with: workbench {found} --resume {path}"
            )
    run = Run(
        dir=path,
        group=recorded_group or group or "",
        resumed=True,
        is_main=distributed.is_main(),
        command=recorded_command or command,
    )
    return run, saved


def load_config_dict(run_dir: str | Path) -> dict:
    path = Path(run_dir) / CONFIG_FILE
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise WorkbenchError(f"cannot read {path} ({exc}); is it a workbench run directory?") from None
    if not isinstance(data, dict):
        raise WorkbenchError(f"{path} is not a workbench config; is it a workbench run directory?")
    return data


BOOKKEEPING_KEYS = frozenset({"name", "run_root", "device", "progress", "num_workers"})


def same_config(run_dir: str | Path, cfg: Any) -> bool:
    """The run's saved config equals ``cfg`` up to the bookkeeping keys (name, run_root, device, progress,
    num_workers), the keys the run drew itself where ``cfg`` left them empty (``opt(..., drawn=True)``), and
    keys added to the command after the run was made that ``cfg`` leaves at their default (a new key's
    default keeps the old behaviour, so a resumed sweep reuses the runs made before it existed)."""
    want = {k: v for k, v in to_dict(cfg).items() if k not in BOOKKEEPING_KEYS}
    saved = {k: v for k, v in load_config_dict(run_dir).items() if k not in BOOKKEEPING_KEYS}
    if dataclasses.is_dataclass(cfg):
        for f in dataclasses.fields(cfg):
            if f.metadata.get("drawn") and not want.get(f.name):
                want.pop(f.name, None)
                saved.pop(f.name, None)
        new_keys = want.keys() - saved.keys()
        if new_keys and _has_defaults(cfg):
            defaults = to_dict(type(cfg)())
            for key in new_keys:
                if key in defaults and want[key] == defaults[key]:
                    del want[key]
    return saved == want


def _has_defaults(cfg: Any) -> bool:
    return all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        for f in dataclasses.fields(cfg)
        if f.init
    )


def finished_run(folder: str | Path, seed: int, cfg: Any | None = None) -> Path | None:
    """A finished run (it has ``summary.json``) of ``seed`` under ``folder``, for a resumed comparison to reuse.

    With ``cfg``, only a run whose saved config matches ``cfg`` (:func:`same_config`) counts, so changed
    settings are never answered by an old run.
    """
    folder = Path(folder)
    for d in sorted(folder.glob("*")) if folder.is_dir() else []:
        summary = load_summary(d)
        if summary is None or summary.get("seed") != seed:
            continue
        if cfg is not None and not same_config(d, cfg):
            continue
        return d
    return None


def load_summary(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise WorkbenchError(f"{path} is not valid JSON; delete the run or re-run it") from None


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Every run directory (a folder with summary.json and config.yaml) under the given paths."""
    found = set()
    for p in map(Path, paths):
        if not p.exists():
            raise WorkbenchError(f"path {p} does not exist; pass run directories or folders holding them")
        candidates = [p / SUMMARY_FILE] if (p / SUMMARY_FILE).is_file() else p.rglob(SUMMARY_FILE)
        for s in candidates:
            if (s.parent / CONFIG_FILE).is_file():
                found.add(s.parent)
    return sorted(found)


@dataclass
class _Entry:
    stored: Path
    inode: int
    size: int
    times: tuple[int, int]
    copied: bool


class _Snapshot:
    """The files and folders of a run directory, kept as hard links (large files, replaced atomically when
    rewritten) or copies (small files, which may be appended to or rewritten in place)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = root / SNAPSHOT_DIR
        shutil.rmtree(self.store, ignore_errors=True)
        self.store.mkdir()
        self.dirs = set(self._walk_dirs())
        self.files: dict[str, _Entry] = {}
        for i, rel in enumerate(self._walk_files()):
            src = root / rel
            st = src.stat()
            stored = self.store / str(i)
            copied = st.st_size <= SNAPSHOT_COPY_BYTES
            if not copied:
                try:
                    os.link(src, stored)
                except OSError:
                    copied = True
            if copied:
                shutil.copyfile(src, stored)
            self.files[rel] = _Entry(stored, st.st_ino, st.st_size, (st.st_atime_ns, st.st_mtime_ns), copied)

    def _walk_dirs(self) -> list[str]:
        out = []
        for here, dirs, _ in os.walk(self.root):
            dirs[:] = [d for d in dirs if Path(here, d) != self.store]
            out += [os.path.relpath(Path(here, d), self.root) for d in dirs]
        return out

    def _walk_files(self) -> list[str]:
        out = []
        for here, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if Path(here, d) != self.store]
            out += [os.path.relpath(Path(here, f), self.root) for f in files if not Path(here, f).is_symlink()]
        return out

    def restore(self) -> None:
        for rel in set(self._walk_files()) - set(self.files):
            (self.root / rel).unlink(missing_ok=True)
        for rel in sorted(set(self._walk_dirs()) - self.dirs, key=lambda r: -r.count(os.sep)):
            shutil.rmtree(self.root / rel, ignore_errors=True)
        for rel in sorted(self.dirs, key=lambda r: r.count(os.sep)):
            (self.root / rel).mkdir(exist_ok=True)
        for rel, entry in self.files.items():
            path = self.root / rel
            if entry.copied:
                same = path.is_file() and path.read_bytes() == entry.stored.read_bytes()
            else:
                st = path.stat() if path.is_file() else None
                same = st is not None and st.st_ino == entry.inode
                if same and st.st_size != entry.size:  # appended to in place
                    os.truncate(path, entry.size)
            if not same:
                os.replace(entry.stored, path)
            os.utime(path, ns=entry.times)
        self.discard(orphans=False)

    def discard(self, orphans: bool) -> None:
        if orphans:  # temporary files of atomic writes that were already there: a killed process left them
            for rel in self.files:
                name = Path(rel).name
                if name.startswith(".") and name.endswith(".tmp"):
                    (self.root / rel).unlink(missing_ok=True)
        shutil.rmtree(self.store, ignore_errors=True)
