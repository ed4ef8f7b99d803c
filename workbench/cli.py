"""The ``workbench`` command line.

``workbench <group> <command> [--preset NAME_OR_PATH] [key=value ...] [--resume RUN_DIR]``

Top-level commands of the core: ``train``, ``eval``, ``data``, ``bench``, ``report``. Subsystems add
command groups (``rl``, ``cil``, ``compress``) through the ``workbench.commands`` entry-point group; each
entry point names a :class:`CommandGroup` in a light module, so a subsystem's heavy imports (SB3,
Avalanche) load only when one of its commands runs.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import shutil
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from workbench.config import describe, resolve_config
from workbench.errors import WorkbenchError, suggest

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def load_object(spec: str) -> Any:
    """Import ``"package.module:attribute"``."""
    module, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def parse_options(argv: Sequence[str], allowed: dict[str, type], command: str) -> tuple[list[str], dict[str, Any]]:
    """Split a raw command's arguments into positionals and typed ``key=value`` options.

    ``allowed`` maps each key to ``str``, ``int`` or ``bool``; an unknown key or a bad value raises a
    one-line WorkbenchError naming the key.
    """
    positional: list[str] = []
    options: dict[str, Any] = {}
    for arg in argv:
        if "=" not in arg:
            positional.append(arg)
            continue
        key, raw = arg.split("=", 1)
        if key not in allowed:
            raise WorkbenchError(
                f"unknown key '{key}' for {command}{suggest(key, allowed)}; valid: {', '.join(allowed)}"
            )
        kind = allowed[key]
        if kind is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise WorkbenchError(f"bad value for '{key}': {raw!r}; valid: true, false")
            options[key] = raw.lower() in ("true", "1", "yes")
        elif kind is int:
            try:
                options[key] = int(raw)
            except ValueError:
                raise WorkbenchError(f"bad value for '{key}': {raw!r} is not a valid int") from None
        else:
            options[key] = raw
    return positional, options


@dataclass
class Command:
    """A config-driven command.

    ``config`` and ``run`` are ``"module:attr"`` strings imported on use. ``run(cfg, run)`` receives the
    validated config object and the :class:`~workbench.runs.Run` (``None`` when ``creates_run`` is False)
    and returns the summary dict (or ``None``). ``presets`` is a folder of YAML presets relative to the
    package directory of the ``run`` module's top package; ``name_keys`` name the config keys that make the
    default run name.
    """

    name: str
    help: str
    config: str
    run: str
    presets: str | None = None
    default_preset: str | None = None
    creates_run: bool = True
    name_keys: tuple[str, ...] = ()
    run_group: str | None = None

    def presets_dir(self) -> Path | None:
        if self.presets is None:
            return None
        top = importlib.import_module(self.run.split(":")[0].split(".")[0])
        return Path(top.__file__).parent / self.presets


@dataclass
class CommandGroup:
    name: str
    help: str
    commands: list[Command] = field(default_factory=list)
    raw: dict[str, Callable[[list[str]], int]] = field(default_factory=dict)


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
    """Resolve the config, create or reopen the run directory, run, and report where the results are."""
    from workbench import distributed, runs
    from workbench.device import choose_device

    preset, resume, overrides, want_help = _split_args(argv)
    if want_help:
        print(command_help(cmd, prog))
        return 0
    schema = load_object(cmd.config)
    run_group = cmd.run_group or group
    if resume is not None and not cmd.creates_run:
        raise WorkbenchError(f"{prog} does not take --resume")
    run = None
    if resume is not None:
        run, saved = runs.open_run(resume, run_group)
        cfg = resolve_config(schema, overrides, base=saved)
    else:
        cfg = resolve_config(schema, overrides, preset or cmd.default_preset, cmd.presets_dir())
    if distributed.launched_by_torchrun():
        # join the process group before the run directory exists: only rank 0 creates and writes it
        distributed.init_distributed(distributed.local_device(choose_device(cfg.device)))
    if run is not None:
        run.is_main = distributed.is_main()
        run.save_config(cfg)
    elif cmd.creates_run:
        run = runs.create_run(run_group, cfg, runs.default_name(cfg, cmd.name_keys))
    fn = load_object(cmd.run)
    if run is not None and run.is_main:
        print(f"run directory: {run.dir}", flush=True)
    try:
        with _sigterm_interrupts():
            fn(cfg, run)
    except WorkbenchError:
        if run is not None and not run.resumed and run.is_main:
            _discard_if_empty(run.dir)
        raise
    except KeyboardInterrupt:
        if run is not None and run.is_main:
            print(f"\ninterrupted; continue with: {prog} --resume {run.dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if run is not None:
            run.close()
    if run is not None and run.is_main:
        print(f"run directory: {run.dir}")
        print(f"tensorboard --logdir {Path(cfg.run_root)}")
    return 0


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a scheduler or ``kill``) stops a command like Ctrl-C: the run saves and says how to resume."""

    def handler(signum, frame) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _discard_if_empty(path: Path) -> None:
    """Remove a run directory that a rejected command created before writing any result."""
    has_results = any((path / "checkpoints").iterdir()) if (path / "checkpoints").is_dir() else False
    if not has_results and not (path / "summary.json").exists():
        shutil.rmtree(path, ignore_errors=True)
        for parent in (path.parent, path.parent.parent):
            try:
                parent.rmdir()
            except OSError:
                break


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``workbench`` script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(argv)
    except WorkbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # noqa: BLE001 - a bug: show the traceback, exit 1
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
