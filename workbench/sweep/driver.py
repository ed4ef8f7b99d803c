"""``workbench sweep COMMAND [--preset P] [key=values ...] [launcher=local jobs=N retries=R ...]``.

The driver validates every run of the grid, creates the sweep's run directory
(``<run_root>/sweep/<name>/<stamp>/``: ``sweep.yaml``, ``status.json``/``status.md``, ``logs/``, ``runs/``,
and at the end ``report.md``/``stats.md``/``profile.png``), hands the runs to a launcher and keeps the status
table. ``--resume SWEEP_DIR`` (or the same command line again) skips finished runs, resumes interrupted ones
with the command's own ``--resume`` and retries failed ones.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbench.command import Command, parse_options
from workbench.errors import WorkbenchError
from workbench.io import atomic_write_json, atomic_write_text
from workbench.sweep.grid import GridSpec, Point, parse_grid, slug, validate_points

SWEEP_FILE = "sweep.yaml"
SWEEP_FORMAT = "workbench-sweep/1"
STATUS_FILE = "status.json"
STATES = ("pending", "running", "done", "failed")
EXIT_INTERRUPTED = 130


@dataclass
class SlurmOptions:
    """``slurm.*`` keys, passed to submitit's SLURM executor."""

    partition: str = ""
    time: int = 60  # minutes per job
    gpus: int = 0  # per node
    cpus: int = 0  # per task (0: the run's threads)
    mem: int = 0  # GB per node (0: the cluster's default)
    account: str = ""
    array_parallelism: int = 0  # jobs of the array running at once (0: all)
    nodes: int = 1
    torchrun: bool = False  # one task per GPU with the torch distributed environment exported
    extra: str = ""  # more #SBATCH options, ';'-separated: "--qos=high;--constraint=a100"


@dataclass
class SweepOptions:
    """The sweep's own keys (everything else is a key of the swept command)."""

    launcher: str = "local"
    jobs: int = 0  # runs at once (0: number of cores)
    run_threads: int = 0  # CPU threads per run (0: cores ÷ jobs)
    retries: int = 1
    name: str = ""
    run_root: str = "runs"
    report_metric: str = ""
    report_by: str = ""
    report_reps: int = 2000
    slurm: SlurmOptions = field(default_factory=SlurmOptions)

    def cores(self) -> int:
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:
            return os.cpu_count() or 1

    def effective_jobs(self) -> int:
        return self.jobs or self.cores()

    def threads(self) -> int:
        return self.run_threads or max(1, self.cores() // self.effective_jobs())


def _option_types() -> dict[str, type]:
    types: dict[str, type] = {}
    for f in SweepOptions.__dataclass_fields__.values():
        if f.name != "slurm":
            types[f.name] = {"int": int, "bool": bool}.get(str(f.type), str)
    for f in SlurmOptions.__dataclass_fields__.values():
        types[f"slurm.{f.name}"] = {"int": int, "bool": bool}.get(str(f.type), str)
    return types


OPTION_TYPES = _option_types()


def parse_sweep_options(pairs: list[str], base: SweepOptions | None = None) -> SweepOptions:
    """Typed sweep options from ``key=value`` strings, checked (one line per problem)."""
    from workbench.sweep.launchers import LAUNCHERS

    _, values = parse_options(pairs, OPTION_TYPES, "workbench sweep")
    opts = base or SweepOptions()
    for key, value in values.items():
        if key.startswith("slurm."):
            setattr(opts.slurm, key[len("slurm.") :], value)
        else:
            setattr(opts, key, value)
    LAUNCHERS.get(opts.launcher)
    for key, low in (("jobs", 1), ("run_threads", 1), ("report_reps", 100), ("slurm.time", 1), ("slurm.nodes", 1)):
        if key in values and values[key] < low:
            raise WorkbenchError(f"bad value for '{key}': {values[key]}; must be ≥ {low}")
    for key in ("retries", "slurm.gpus", "slurm.cpus", "slurm.mem", "slurm.array_parallelism"):
        if key in values and values[key] < 0:
            raise WorkbenchError(f"bad value for '{key}': {values[key]}; must be ≥ 0")
    return opts


# ---------------------------------------------------------------------------- the sweep


@dataclass
class Sweep:
    """A sweep directory, its grid, the validated configs and the status table."""

    dir: Path
    cmd: Command
    group: str
    spec: GridSpec
    options: SweepOptions
    configs: list[Any]
    status: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def points(self) -> list[Point]:
        return self.spec.points()

    @property
    def runs_root(self) -> Path:
        return self.dir / "runs"

    def folder(self, point: Point) -> Path:
        """Where the runs of one point live: ``runs/<group>/<point name>/<stamp>-s<seed>``."""
        return self.runs_root / (self.cmd.run_group or self.group) / point.name

    def fresh_argv(self, point: Point) -> list[str]:
        preset = ["--preset", self.spec.preset] if self.spec.preset else []
        return [*self.spec.command, *preset, *point.overrides, f"run_root={self.runs_root}", f"name={point.name}"]

    def log(self, point: Point) -> Path:
        return self.dir / "logs" / f"{point.name}.log"

    # ------------------------------------------------------------ status table
    def init_status(self, previous: list[dict[str, Any]] | None) -> None:
        old = {s["name"]: s for s in previous or []}
        self.status = []
        for p in self.points:
            entry = {
                "index": p.index,
                "name": p.name,
                "values": p.values,
                "status": "pending",
                "attempts": 0,
                "exit_code": None,
                "run_dir": "",
                "seconds": None,
                "pid": None,
                "job_id": None,
            }
            if p.name in old:
                entry.update({k: old[p.name].get(k) for k in ("attempts", "exit_code", "run_dir", "seconds", "job_id")})
            self.status.append(entry)

    def mark(self, point: Point, **fields: Any) -> None:
        with self._lock:
            self.status[point.index].update(fields)
            self.write_status()

    def counts(self) -> dict[str, int]:
        return {s: sum(e["status"] == s for e in self.status) for s in STATES}

    def write_status(self) -> None:
        elapsed = time.time() - self.started
        atomic_write_json(
            self.dir / STATUS_FILE, {"elapsed_s": round(elapsed, 1), "counts": self.counts(), "runs": self.status}
        )
        atomic_write_text(self.dir / "status.md", status_markdown(self.status, elapsed))


def status_markdown(status: list[dict[str, Any]], elapsed: float) -> str:
    counts = {s: sum(e["status"] == s for e in status) for s in STATES}
    head = ", ".join(f"{n} {s}" for s, n in counts.items())
    lines = [
        f"# sweep status: {head} ({elapsed:.0f} s)",
        "",
        "| # | run | status | attempts | exit code | seconds | job | run dir |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in status:
        secs = "" if e["seconds"] is None else f"{e['seconds']:.1f}"
        code = "" if e["exit_code"] is None else str(e["exit_code"])
        lines.append(
            f"| {e['index']} | {e['name']} | {e['status']} | {e['attempts']} | {code} | {secs} | "
            f"{e.get('job_id') or ''} | {e['run_dir']} |"
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- progress


class Progress:
    """One line: runs done / running / failed of the total, and the time so far (a tqdm bar on a terminal,
    a plain line per change elsewhere)."""

    def __init__(self, sweep: Sweep) -> None:
        from workbench.cli import _is_terminal

        self.sweep, self.last = sweep, ""
        self.bar = None
        if _is_terminal(sys.stderr):
            from tqdm import tqdm

            self.bar = tqdm(total=len(sweep.status), desc="sweep", unit="run", dynamic_ncols=True)

    def update(self) -> None:
        c = self.sweep.counts()
        text = f"done {c['done']}/{len(self.sweep.status)}, running {c['running']}, failed {c['failed']}"
        if self.bar is not None:
            self.bar.n = c["done"] + c["failed"]
            self.bar.set_postfix_str(text, refresh=True)
        elif text != self.last:
            print(f"[sweep {time.time() - self.sweep.started:6.0f} s] {text}", file=sys.stderr, flush=True)
        self.last = text

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------- entry


USAGE = """usage: workbench sweep COMMAND [--preset P] [key=a,b,c | key=a:b ...] [sweep keys]
       workbench sweep --resume SWEEP_DIR [sweep keys]

grid: key=a,b,c (a list) or key=a:b (integers a..b-1) for any key of COMMAND; one value: the same for every run
sweep keys: launcher=local|slurm  jobs=N (default: cores)  run_threads=N (default: cores ÷ jobs)  retries=N (1)
            name=NAME  run_root=DIR  report_metric=KEY  report_by=KEY (strata, e.g. env)  report_reps=N (2000)
slurm keys: slurm.partition  slurm.time (min)  slurm.gpus  slurm.cpus  slurm.mem (GB)  slurm.account
            slurm.array_parallelism  slurm.nodes  slurm.torchrun=true  slurm.extra='--qos=high;--constraint=a100'"""


def _split(argv: list[str]) -> tuple[str | None, str | None, list[str], list[str], list[str]]:
    """(resume dir, preset, command words, command key=values, sweep key=values)."""
    resume = preset = None
    words, keys, sweep_keys = [], [], []
    it = iter(argv)
    for arg in it:
        if arg in ("--resume", "--preset"):
            value = next(it, None)
            if value is None:
                raise WorkbenchError(f"{arg} needs a value")
            resume, preset = (value, preset) if arg == "--resume" else (resume, value)
        elif arg.startswith("-"):
            raise WorkbenchError(f"unknown option {arg!r}; options are --preset, --resume, --help")
        elif "=" in arg:
            (sweep_keys if arg.split("=", 1)[0].strip() in OPTION_TYPES else keys).append(arg)
        elif keys or sweep_keys:
            raise WorkbenchError(f"bad argument {arg!r}: after the command come key=value pairs")
        else:
            words.append(arg)
    return resume, preset, words, keys, sweep_keys


def prepare(argv: list[str], sweep_dir: Path | None = None) -> Sweep:
    """Everything before the first run: parse, validate every point, create (or reopen) the sweep directory.

    ``sweep_dir``: an existing folder to hold a new sweep (or the same sweep again), e.g. a compare's run."""
    from workbench.cli import find_command

    resume, preset, words, keys, sweep_keys = _split(argv)
    if resume is not None:
        if words or keys or preset:
            raise WorkbenchError(
                "--resume SWEEP_DIR takes only sweep keys (jobs=, retries=, launcher=...); its grid is in sweep.yaml"
            )
        return reopen(Path(resume), sweep_keys)
    cmd, _, group, rest = find_command(words)
    if rest:
        raise WorkbenchError(f"bad argument {rest[0]!r}: after the command come key=value pairs")
    options = parse_sweep_options(sweep_keys)
    spec = parse_grid(cmd, words, keys, preset)
    configs = validate_points(cmd, spec, Path(options.run_root) / "sweep")
    if sweep_dir is not None and (sweep_dir / SWEEP_FILE).is_file():
        if GridSpec.from_dict(load_sweep_file(sweep_dir)).to_dict() != spec.to_dict():
            raise WorkbenchError(f"{sweep_dir} holds another sweep (its sweep.yaml has another grid)")
        return reopen(sweep_dir, sweep_keys)
    existing = None if sweep_dir is not None else find_same_sweep(Path(options.run_root), _name(options, words), spec)
    if existing is not None:
        print(f"continuing sweep {existing} (same grid)", file=sys.stderr)
        return reopen(existing, sweep_keys)
    if sweep_dir is None:
        sweep_dir = create_sweep_dir(Path(options.run_root), _name(options, words))
    sweep = Sweep(sweep_dir, cmd, group, spec, options, configs)
    save_sweep(sweep)
    sweep.init_status(None)
    sweep.write_status()
    return sweep


def _name(options: SweepOptions, words: list[str]) -> str:
    return options.name or "-".join(words)


def create_sweep_dir(root: Path, name: str) -> Path:
    parent = root / "sweep" / slug(name)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for k in range(1000):
            path = parent / (stamp + (f"-{k}" if k else ""))
            with contextlib.suppress(FileExistsError):
                path.mkdir()
                return path
    except OSError as exc:
        raise WorkbenchError(
            f"cannot create a sweep directory under run_root={root} ({exc.strerror}); pass "
            "run_root=DIR, a writable folder"
        ) from None
    raise WorkbenchError(f"too many sweeps named {name} in one second under {parent}")


def save_sweep(sweep: Sweep) -> None:
    data = {
        "format": SWEEP_FORMAT,
        **sweep.spec.to_dict(),
        "options": asdict(sweep.options),
        "runs": len(sweep.configs),
        "created": time.strftime("%FT%T%z"),
    }
    atomic_write_text(sweep.dir / SWEEP_FILE, yaml.safe_dump(data, sort_keys=False))


def load_sweep_file(path: Path) -> dict[str, Any]:
    file = path / SWEEP_FILE
    try:
        data = yaml.safe_load(file.read_text()) if file.is_file() else None
    except (OSError, yaml.YAMLError):
        data = None
    if not isinstance(data, dict) or data.get("format") != SWEEP_FORMAT:
        raise WorkbenchError(
            f"{path} is not a sweep directory (no valid {SWEEP_FILE}); pass the folder that workbench sweep printed"
        )
    return data


def find_same_sweep(root: Path, name: str, spec: GridSpec) -> Path | None:
    """The newest sweep of this name under ``root`` with the same command, preset and grid (re-running a sweep)."""
    parent = root / "sweep" / slug(name)
    for d in sorted(parent.iterdir(), reverse=True) if parent.is_dir() else []:
        with contextlib.suppress(WorkbenchError):
            if GridSpec.from_dict(load_sweep_file(d)).to_dict() == spec.to_dict():
                return d
    return None


def reopen(path: Path, sweep_keys: list[str]) -> Sweep:
    """An existing sweep, with its grid re-validated and sweep keys (jobs=, retries=...) possibly changed."""
    from workbench.cli import find_command

    data = load_sweep_file(path)
    spec = GridSpec.from_dict(data)
    saved = data.get("options", {})
    base = SweepOptions(
        **{k: v for k, v in saved.items() if k != "slurm"}, slurm=SlurmOptions(**saved.get("slurm", {}))
    )
    options = parse_sweep_options(sweep_keys, base)
    cmd, _, group, _ = find_command(list(spec.command))
    configs = validate_points(cmd, spec, path / "runs")
    sweep = Sweep(path, cmd, group, spec, options, configs)
    previous = None
    with contextlib.suppress(OSError, ValueError):
        import json

        previous = json.loads((path / STATUS_FILE).read_text()).get("runs")
    if sweep_keys:
        save_sweep(sweep)
    sweep.init_status(previous)
    return sweep


def execute(sweep: Sweep) -> int:
    """Run what is not finished, then the report; the exit status says whether every run finished."""
    from workbench.sweep.launchers import LAUNCHERS

    print(
        f"sweep directory: {sweep.dir} ({len(sweep.status)} runs, launcher={sweep.options.launcher}, "
        f"jobs={sweep.options.effective_jobs()}, threads per run={sweep.options.threads()})",
        flush=True,
    )
    progress = Progress(sweep)
    launcher = LAUNCHERS.get(sweep.options.launcher)(sweep, progress)
    try:
        from workbench.cli import signals_interrupt

        with signals_interrupt():
            launcher.run()
    except KeyboardInterrupt:
        sweep.write_status()
        progress.close()
        print(f"\nsweep interrupted; continue with: workbench sweep --resume {sweep.dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    progress.update()
    progress.close()
    sweep.write_status()
    failed = [e for e in sweep.status if e["status"] != "done"]
    if len(failed) < len(sweep.status):
        write_sweep_report(sweep)
    print(f"status: {sweep.dir / 'status.md'}")
    if failed:
        names = ", ".join(
            f"{e['name']} (exit {e['exit_code']}, log {sweep.dir / 'logs' / (e['name'] + '.log')})" for e in failed
        )
        what = (
            "all runs failed"
            if len(failed) == len(sweep.status)
            else f"{len(failed)} of {len(sweep.status)} runs failed"
        )
        print(f"error: {what}: {names}; retry with: workbench sweep --resume {sweep.dir}", file=sys.stderr)
        return 1
    return 0


def write_sweep_report(sweep: Sweep) -> None:
    from workbench.report import write_report, write_stats

    _, _, md = write_report([sweep.runs_root], sweep.dir)
    print(md)
    o = sweep.options
    paths = write_stats(
        [sweep.runs_root],
        sweep.dir,
        metric=o.report_metric or None,
        by=o.report_by or None,
        reps=o.report_reps,
        keys=list(sweep.spec.grid),  # a method is a combination of swept values, not of derived keys
    )
    print(f"wrote {', '.join(str(p) for p in paths)}")


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    return execute(prepare(argv))
