"""The pieces a command declaration needs, in a leaf module (no import of ``workbench.cli`` or of any command).

``workbench.cli`` dispatches; ``workbench.commands`` and the subsystems' command groups declare
:class:`Command` objects here. Raw commands (``data``, ``bench``, ``report``) parse their ``key=value``
arguments with :func:`parse_options`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError, suggest

#: Keys every command may change on ``--resume``: where and how it runs, never what it computes.
RESUME_BOOKKEEPING_KEYS: tuple[str, ...] = ("device", "progress", "num_workers", "name", "run_root")


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

    ``resume_keys`` are the config keys that ``--resume RUN_DIR key=value`` may change (dotted for nested
    keys; a section name covers its sub-keys), besides :data:`RESUME_BOOKKEEPING_KEYS`; any other
    changed key is refused before anything is written. ``None`` (not declared) refuses only the
    ``name_keys`` (what the run is: its method, model, env...) and names the other changed keys on stderr,
    so a command that has not declared its keys keeps working.
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
    resume_keys: tuple[str, ...] | None = None
    preset_key: str | None = None

    def presets_dir(self) -> Path | None:
        if self.presets is None:
            return None
        top = importlib.import_module(self.run.split(":")[0].split(".")[0])
        return Path(top.__file__).parent / self.presets

    def keyed_preset(self, overrides: Sequence[str]) -> str | None:
        """The preset named by the value of ``preset_key`` in ``overrides`` (``benchmark=X`` → preset ``X``).

        A command whose runs are defined by a protocol (``cil run benchmark=split-digits-5``) then trains
        with that protocol's settings unless ``--preset`` says otherwise; ``None`` when no such preset exists.
        """
        pdir = self.presets_dir()
        if self.preset_key is None or pdir is None:
            return None
        values = [arg.split("=", 1)[1] for arg in overrides if arg.split("=", 1)[0] == self.preset_key]
        if not values or not (pdir / f"{values[-1]}.yaml").is_file():
            return None
        return values[-1]


@dataclass
class CommandGroup:
    name: str
    help: str
    commands: list[Command] = field(default_factory=list)
    raw: dict[str, Callable[[list[str]], int]] = field(default_factory=dict)
