"""The ``workbench`` command line.

``workbench <group> <command> [--preset NAME_OR_PATH] [key=value ...] [--resume RUN_DIR]``

Top-level commands of the core: ``train``, ``eval``, ``data``, ``bench``, ``report``. Subsystems add
command groups (``rl``, ``cil``, ``compress``) through the ``workbench.commands`` entry-point group; each
entry point names a :class:`CommandGroup` in a light module, so a subsystem's heavy imports (SB3,
Avalanche) load only when one of its commands runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import entry_points
from typing import Any

from workbench.command import RESUME_BOOKKEEPING_KEYS, Command, CommandGroup, load_object, parse_options
from workbench.config import describe, flatten_dict, resolve_config, to_dict
from workbench.errors import WorkbenchError, suggest

__all__ = ["Command", "CommandGroup", "load_object", "main", "parse_options", "run_command"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _core_commands() -> tuple[list[Command], dict[str, tuple[str, Callable[[list[str]], int]]]]:
    from workbench.commands import CORE_COMMANDS, RAW_COMMANDS

    return CORE_COMMANDS, RAW_COMMANDS


def _groups() -> dict[str, str]:
    """Installed command groups whose module imports (a subsystem that is not installed is skipped)."""
    groups = {}
    for ep in entry_points(group="workbench.commands"):
        if importlib.util.find_spec(ep.value.split(":")[0].split(".")[0]) is not None:
            groups[ep.name] = ep.value
    return groups


def _usage(groups: dict[str, str]) -> str:
    core, raw = _core_commands()
    lines = ["usage: workbench <command> [--preset NAME_OR_PATH] [key=value ...] [--resume RUN_DIR]", "", "commands:"]
    for cmd in core:
        lines.append(f"  {cmd.name:<10} {cmd.help}")
    for name, (help_text, _) in raw.items():
        lines.append(f"  {name:<10} {help_text}")
    for name in sorted(groups):
        lines.append(f"  {name:<10} {load_object(groups[name]).help} (workbench {name} --help)")
    lines += ["", "workbench <command> --help lists a command's keys, types and defaults."]
    return "\n".join(lines)


def command_help(cmd: Command, prog: str) -> str:
    schema = load_object(cmd.config)
    rows = describe(schema)
    width = max(len(r[0]) for r in rows)
    tw = max(len(r[1]) for r in rows)
    lines = [f"usage: {prog} [--preset NAME_OR_PATH] [key=value ...] [--resume RUN_DIR]", "", cmd.help, ""]
    pdir = cmd.presets_dir()
    if pdir is not None and pdir.is_dir():
        names = sorted(p.stem for p in pdir.glob("*.yaml"))
        default = f" (default: {cmd.default_preset})" if cmd.default_preset else ""
        lines += [f"presets{default}: {', '.join(names)}", ""]
    lines.append("keys:")
    for key, typ, default, help_text in rows:
        lines.append(f"  {key:<{width}}  {typ:<{tw}}  default {default:<12} {help_text}")
    return "\n".join(lines)


def _split_args(argv: list[str]) -> tuple[str | None, str | None, list[str], bool]:
    preset = resume = None
    overrides: list[str] = []
    want_help = False
    it = iter(argv)
    for arg in it:
        if arg in ("-h", "--help"):
            want_help = True
        elif arg in ("--preset", "--resume"):
            value = next(it, None)
            if value is None:
                raise WorkbenchError(f"{arg} needs a value")
            if arg == "--preset":
                preset = value
            else:
                resume = value
        elif arg.startswith("--preset=") or arg.startswith("--resume="):
            key, value = arg[2:].split("=", 1)
            preset, resume = (value, resume) if key == "preset" else (preset, value)
        elif arg.startswith("-"):
            raise WorkbenchError(f"unknown option {arg!r}; options are --preset, --resume, --help (keys are key=value)")
        else:
            overrides.append(arg)
    return preset, resume, overrides, want_help


def run_command(cmd: Command, argv: list[str], prog: str, group: str) -> int:
    """Resolve and validate the config, create or reopen the run directory, run, and say where the results are.

    Everything the user typed is checked before anything is written. A resumed run is reopened as a
    transaction: the changed keys are checked against the command's ``resume_keys`` first, and a resume
    that fails before the command has restored its state leaves the run directory as it was.
    """
    from workbench import distributed, runs
    from workbench.device import choose_device

    preset, resume, overrides, want_help = _split_args(argv)
    if want_help:
        print(command_help(cmd, prog))
        return 0
    schema = load_object(cmd.config)
    run_group = cmd.run_group or group
    command = None if cmd.name == run_group else cmd.name
    if resume is not None and not cmd.creates_run:
        raise WorkbenchError(f"{prog} does not take --resume")
    overrides = [*_quiet_progress(schema, overrides), *overrides]
    run = None
    if resume is not None:
        if preset is not None:
            raise WorkbenchError(
                "--preset cannot be combined with --resume: the run keeps its settings; pass key=value to change one"
            )
        run, saved = runs.open_run(resume, run_group, command)
        cfg = resolve_config(schema, overrides, base=saved)
        _check_resume_changes(cmd, prog, resolve_config(schema, [], base=saved), cfg)
    else:
        if preset is None and (preset := cmd.keyed_preset(overrides)) is not None:
            print(f"preset: {preset} (the settings of {cmd.preset_key}={preset}; --preset NAME to choose others)")
        cfg = resolve_config(schema, overrides, preset or cmd.default_preset, cmd.presets_dir())
    if distributed.launched_by_torchrun():
        # join the process group before the run directory exists: only rank 0 creates and writes it
        distributed.init_distributed(distributed.local_device(choose_device(cfg.device)))
    if run is not None:
        run.is_main = distributed.is_main()
        run.begin_resume()
        try:
            run.save_config(cfg)
        except BaseException:
            run.rollback()
            raise
    elif cmd.creates_run:
        run = runs.create_run(run_group, cfg, runs.default_name(cfg, cmd.name_keys), command=command)
    fn = load_object(cmd.run)
    if run is not None and run.is_main:
        print(f"run directory: {run.dir}", flush=True)
    try:
        with signals_interrupt():
            fn(cfg, run)
    except KeyboardInterrupt:
        if run is not None:
            run.commit()
            if run.is_main:
                print(f"\ninterrupted; continue with: {prog} --resume {run.dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        if run is not None and run.resumed:
            run.rollback()
        elif run is not None and run.is_main:
            run.close()
            _discard_if_empty(run)
        raise
    else:
        if run is not None:
            run.commit()
    finally:
        if run is not None:
            run.close()
    if run is not None and run.is_main:
        print(f"run directory: {run.dir}")
        print(f"tensorboard --logdir {run.logdir}")
    return 0


def _quiet_progress(schema: type, overrides: list[str]) -> list[str]:
    """``progress=false`` when stderr is not a terminal (a log file, CI, a script), unless the user set it: a
    progress bar there is a wall of carriage returns."""
    import dataclasses

    has_key = any(f.name == "progress" for f in dataclasses.fields(schema))
    given = any(o.split("=", 1)[0].strip() == "progress" for o in overrides)
    if not has_key or given or _is_terminal(sys.stderr):
        return []
    return ["progress=false"]


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty()) and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def _check_resume_changes(cmd: Command, prog: str, saved: Any, new: Any) -> None:
    """Refuse, before anything is written, keys that ``--resume`` may not change for this command."""
    before, after = flatten_dict(to_dict(saved)), flatten_dict(to_dict(new))
    changed = [k for k in after if before.get(k, object()) != after[k]]

    def allowed(key: str, keys: Sequence[str]) -> bool:
        return any(key == a or key.startswith(a + ".") for a in keys)

    changed = [k for k in changed if not allowed(k, RESUME_BOOKKEEPING_KEYS)]
    if not changed:
        return
    if cmd.resume_keys is None:  # not declared: only the keys that name the run are refused
        refused = [k for k in changed if allowed(k, cmd.name_keys)]
        if not refused:
            print(f"note: --resume changes {', '.join(changed)}", file=sys.stderr)
            return
    else:
        refused = [k for k in changed if not allowed(k, cmd.resume_keys)]
    if refused:
        what = ", ".join(f"{k} ({before.get(k)!r} → {after[k]!r})" for k in refused)
        may = ", ".join(cmd.resume_keys or ()) or "none besides device, progress, num_workers"
        if cmd.resume_keys is None:
            may = f"any key but {', '.join(cmd.name_keys)}"
        raise WorkbenchError(
            f"--resume cannot change {what}: the run was made with them (may change: {may}); "
            f"start a new run with {prog} to change them"
        )


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler or ``kill``) and SIGINT stop a command like Ctrl-C: the run saves and says how to
    resume. SIGINT is handled explicitly because a shell starts background jobs with SIGINT ignored, so a
    script's ``kill -INT`` would otherwise do nothing."""

    def handler(signum, frame) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _discard_if_empty(run: Any) -> None:
    """Remove a run directory that a rejected command created before writing any result, and the parent
    folders its creation made."""
    from workbench.runs import remove_empty_dirs

    path = run.dir
    has_results = any((path / "checkpoints").iterdir()) if (path / "checkpoints").is_dir() else False
    if not has_results and not (path / "summary.json").exists():
        shutil.rmtree(path, ignore_errors=True)
        remove_empty_dirs(run.created_parents)


def _dispatch(argv: list[str]) -> int:
    groups = _groups()
    core, raw = _core_commands()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage(groups))
        return 0 if argv else EXIT_USAGE
    head, rest = argv[0], argv[1:]
    core_by_name = {c.name: c for c in core}
    if head in core_by_name:
        return run_command(core_by_name[head], rest, f"workbench {head}", head)
    if head in raw:
        return raw[head][1](rest)
    if head in groups:
        grp: CommandGroup = load_object(groups[head])
        names = {c.name: c for c in grp.commands}
        if not rest or rest[0] in ("-h", "--help"):
            print(f"usage: workbench {head} <command> ...\n\n{grp.help}\n\ncommands:")
            for c in grp.commands:
                print(f"  {c.name:<10} {c.help}")
            for name in grp.raw:
                print(f"  {name:<10}")
            return 0 if rest else EXIT_USAGE
        sub, sub_rest = rest[0], rest[1:]
        if sub in names:
            return run_command(names[sub], sub_rest, f"workbench {head} {sub}", head)
        if sub in grp.raw:
            return grp.raw[sub](sub_rest)
        valid = [*names, *grp.raw]
        raise WorkbenchError(f"unknown command '{head} {sub}'{suggest(sub, valid)}; valid: {', '.join(valid)}")
    valid = [*core_by_name, *raw, *groups]
    raise WorkbenchError(f"unknown command '{head}'{suggest(head, valid)}; valid: {', '.join(sorted(valid))}")


def find_command(argv: list[str]) -> tuple[Command, str, str, list[str]]:
    """The config-driven command that ``argv`` starts with (``train``, ``rl train``...): the command, its prog
    name, its group and the remaining arguments; anything else is a one-line WorkbenchError."""
    groups = _groups()
    core, _ = _core_commands()
    if not argv:
        raise WorkbenchError("name the command to run, e.g. 'train' or 'rl train'")
    head, rest = argv[0], argv[1:]
    core_by_name = {c.name: c for c in core}
    if head in core_by_name:
        return core_by_name[head], f"workbench {head}", head, rest
    if head in groups:
        grp: CommandGroup = load_object(groups[head])
        names = {c.name: c for c in grp.commands}
        sub = rest[0] if rest else ""
        if sub in names:
            return names[sub], f"workbench {head} {sub}", head, rest[1:]
        if not sub or sub.startswith("-") or "=" in sub:
            raise WorkbenchError(
                f"'{head}' needs one of its commands first: {', '.join(names)} (e.g. '{head} {next(iter(names))} ...')"
            )
        raise WorkbenchError(f"unknown command '{head} {sub}'{suggest(sub, names)}; valid: {', '.join(names)}")
    valid = [*core_by_name, *groups]
    raise WorkbenchError(f"unknown command '{head}'{suggest(head, valid)}; valid: {', '.join(sorted(valid))}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``workbench`` script; returns the exit status."""
    from workbench.io import STORAGE_ERRNOS

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(argv)
    except WorkbenchError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS:
            traceback.print_exc()
            return 1
        where = f" ({exc.filename})" if exc.filename else ""
        fix = "free space or pass run_root=DIR on a writable disk"
        print(f"error: {exc.strerror or exc}{where}; {fix}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # noqa: BLE001 - a bug: show the traceback, exit 1
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
