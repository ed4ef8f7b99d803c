"""The grid of a sweep: ``key=a,b,c`` lists and ``key=a:b`` integer ranges over any key of the swept command.

``workbench sweep train dataset=digits lr=0.05,0.1 seed=0:3`` expands to the Cartesian product of the swept
keys in the order they are given (2 × 3 = 6 runs); a key with one value is passed to every run. Ranges are
half-open like Python's (``0:3`` is 0, 1, 2) and apply to integer keys; a list-typed key (``milestones``)
takes ``a,b,c`` as one list value, and alternatives of it are separated by ``;``
(``milestones='30,60;50,75'``). Nested keys are dotted (``kd.temperature=2,4``).

Every expanded config is resolved and validated by the command's own schema before anything is launched or
written: one bad value anywhere is one line, exit 2.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.command import Command, load_object
from workbench.config import describe, resolve_config
from workbench.errors import WorkbenchError, suggest

_RANGE = re.compile(r"^(-?\d+):(-?\d+)$")
#: keys the sweep sets itself on every run
RUN_KEYS = ("run_root", "name")


def slug(text: str) -> str:
    """A folder-safe name."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-") or "sweep"


@dataclass
class Point:
    """One run of the grid: its index, its swept values and every override passed to the command."""

    index: int
    values: dict[str, str]
    overrides: list[str]

    @property
    def name(self) -> str:
        """The run name: index and swept values, e.g. ``003_lr-0.1_seed-2``; unique within the sweep."""
        parts = [f"{k.split('.')[-1]}-{v}" for k, v in self.values.items()]
        text = slug("_".join(parts))[:80] if parts else ""
        return f"{self.index:03d}" + (f"_{text}" if text else "")


@dataclass
class GridSpec:
    """What ``sweep.yaml`` stores: the command, its preset, the fixed overrides and the swept keys."""

    command: list[str]
    preset: str | None = None
    fixed: list[str] = field(default_factory=list)
    grid: dict[str, list[str]] = field(default_factory=dict)

    def points(self) -> list[Point]:
        keys = list(self.grid)
        combos = itertools.product(*(self.grid[k] for k in keys)) if keys else [()]
        out = []
        for i, combo in enumerate(combos):
            values = dict(zip(keys, combo))
            out.append(Point(i, values, [*self.fixed, *(f"{k}={v}" for k, v in values.items())]))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "preset": self.preset, "fixed": self.fixed, "grid": self.grid}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridSpec:
        return cls(list(data["command"]), data.get("preset"), list(data.get("fixed", [])), dict(data.get("grid", {})))


def key_types(cmd: Command) -> dict[str, str]:
    """Every (dotted) key of the command's config and its type name."""
    return schema_types(load_object(cmd.config))


def schema_types(schema: type) -> dict[str, str]:
    """Every (dotted) key of a config dataclass and its type name (as :func:`expand_value` reads it)."""
    return {key: typ for key, typ, _, _ in describe(schema)}


def _is_list(typ: str) -> bool:
    return any(t in typ for t in ("list[", "tuple[", "Sequence["))


def refuse_split(key: str, raw: str, typ: str = "str") -> None:
    """Refuse, in one line, a fixed ``key=raw`` setting that a compare hands to its runs through the sweep
    grid when the grid would expand it into several runs (:func:`expand_value`: ``a,b`` for a scalar key,
    ``a;b`` for a list key, ``a:b`` for an int key). ``typ``: the key's type name (unknown: ``str``)."""
    try:
        several = len(expand_value(key, raw, typ)) > 1
    except WorkbenchError:  # an empty or repeated value in a list is a list all the same
        several = True
    if several:
        what = "a ';'" if _is_list(typ) else ("a range a:b" if _RANGE.match(raw) else "a comma")
        raise WorkbenchError(
            f"'{key}' holds {what} ({raw!r}), which the sweep grid would split into several runs; "
            "a compare cannot pass it to its runs: give one value"
        )


def expand_value(key: str, raw: str, typ: str) -> list[str]:
    """The values a ``key=raw`` argument stands for (one value: not swept)."""
    if _is_list(typ):
        values = raw.split(";") if ";" in raw else [raw]
    elif _RANGE.match(raw) and typ in ("int", "Optional[int]", "int | None"):
        lo, hi = map(int, _RANGE.match(raw).groups())  # type: ignore[union-attr]
        if hi <= lo:
            raise WorkbenchError(f"empty range for '{key}': {raw} holds no integer (a:b is a, a+1, ..., b-1); use a<b")
        return [str(v) for v in range(lo, hi)]
    elif "," in raw:
        values = raw.split(",")
    else:
        return [raw]
    if any(v.strip() == "" for v in values):
        raise WorkbenchError(f"empty value in the list for '{key}': {raw!r}; give every value, e.g. {key}=a,b,c")
    if len(set(values)) != len(values):
        raise WorkbenchError(f"repeated value in the list for '{key}': {raw!r}; give each value once")
    return values


def parse_grid(cmd: Command, command: list[str], args: list[str], preset: str | None) -> GridSpec:
    """Split the command's ``key=value`` arguments into fixed overrides and swept keys (types from the schema)."""
    types = key_types(cmd)
    spec = GridSpec(command=command, preset=preset)
    for arg in args:
        if "=" not in arg:
            raise WorkbenchError(f"bad argument {arg!r}: sweep keys and grid keys are key=value (see --help)")
        key, raw = (s.strip() for s in arg.split("=", 1))
        if key not in types:
            raise WorkbenchError(
                f"unknown key '{key}' for {' '.join(command)}{suggest(key, types)}; "
                f"see workbench {' '.join(command)} --help for its keys"
            )
        if key in RUN_KEYS:
            raise WorkbenchError(
                f"'{key}' is set by the sweep for each run; {key}=VALUE (one value) names the sweep's own"
            )
        if key in spec.grid or any(f.split("=", 1)[0] == key for f in spec.fixed):
            raise WorkbenchError(f"key '{key}' is given twice; give its values once, e.g. {key}=a,b")
        values = expand_value(key, raw, types[key])
        if len(values) == 1:
            spec.fixed.append(f"{key}={values[0]}")
        else:
            spec.grid[key] = values
    return spec


def validate_points(cmd: Command, spec: GridSpec, run_root: Path) -> list[Any]:
    """Resolve and validate the config of every point (nothing is written); returns the configs."""
    schema = load_object(cmd.config)
    configs = []
    for p in spec.points():
        overrides = [*p.overrides, f"run_root={run_root}", f"name={p.name}"]
        try:
            # the preset the command itself would apply (``cil run benchmark=X`` brings preset X)
            preset = spec.preset or cmd.keyed_preset(overrides) or cmd.default_preset
            configs.append(resolve_config(schema, overrides, preset, cmd.presets_dir()))
        except WorkbenchError as exc:
            where = f" (run {p.index}: {', '.join(f'{k}={v}' for k, v in p.values.items())})" if p.values else ""
            raise WorkbenchError(f"{exc}{where}") from None
    return configs
