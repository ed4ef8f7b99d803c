"""Typed configs: a dataclass schema, filled from a YAML preset and ``key=value`` overrides (OmegaConf).

Every command has one dataclass config inheriting :class:`CommonConfig`. Resolution order:
schema defaults → preset YAML → command-line overrides. An unknown key, a wrong type or a value outside a
field's choices raises :class:`WorkbenchError` naming the key and the valid choices, before anything is
written.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from workbench.errors import WorkbenchError, suggest

T = TypeVar("T")


def opt(
    default: Any,
    help: str = "",
    choices: Sequence[Any] | None = None,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    finite: bool = True,
    nonempty: bool | None = None,
    requires: dict[str, Sequence[Any]] | None = None,
    excludes: Sequence[str] = (),
    drawn: bool = False,
) -> Any:
    """A config field with a default, a help text, optional valid choices and declared constraints.

    Checked for every command by :func:`check_constraints`, before anything is written:

    - every float (also inside lists and mappings) is a number, never NaN, and finite unless ``finite=False``;
    - ``ge``/``gt``/``le``/``lt`` bound a number, or each number of a list (``None`` stays allowed);
    - ``nonempty``: a list must hold a value (default: True when the default list is non-empty);
    - ``requires={"optimizer": ("sgd",)}``: a value other than the default needs those values of the other
      keys (dotted from the root, or siblings of a nested key);
    - ``excludes=("model",)``: this key and those keys cannot both differ from their defaults.

    ``drawn=True``: left at its (empty) default, the run draws the value from its seed and writes it back into
    its ``config.yaml`` (a class order); a finished run then still answers a request that left it empty.
    """
    meta = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "bounds": {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None},
        "finite": finite,
        "nonempty": bool(default) if nonempty is None and isinstance(default, list) else bool(nonempty),
        "requires": {k: tuple(v) for k, v in (requires or {}).items()},
        "excludes": tuple(excludes),
        "drawn": drawn,
    }
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class CommonConfig:
    """Keys every command shares."""

    seed: int = opt(0, "master seed; every other seed (data order, students, envs) derives from it")
    device: str = opt("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    name: str = opt("", "run name: runs/<group>/<name>/... (default: derived from the config)")
    run_root: str = opt("runs", "root folder of all run directories")


def _fields(schema: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(schema)}


def _hints(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)


def _field_at(schema: type, dotted: str) -> tuple[dataclasses.Field, Any]:
    """The dataclass field and its type hint at a dotted path; unknown keys raise with suggestions."""
    parts = dotted.split(".")
    current = schema
    for i, part in enumerate(parts):
        fields = _fields(current)
        prefix = ".".join(parts[:i])
        if part not in fields:
            valid = [f"{prefix}.{k}" if prefix else k for k in fields]
            full = dotted if not prefix else f"{prefix}.{part}"
            raise WorkbenchError(f"unknown config key '{full}'{suggest(full, valid)}; valid keys: {', '.join(valid)}")
        hint = _hints(current)[part]
        if i == len(parts) - 1:
            return fields[part], hint
        if not dataclasses.is_dataclass(hint):
            raise WorkbenchError(f"config key '{'.'.join(parts[: i + 1])}' has no sub-keys; drop '.{parts[i + 1]}'")
        current = hint
    raise AssertionError("unreachable")


def _is_list(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        return any(_is_list(a) for a in typing.get_args(hint))
    return origin in (list, tuple, Sequence)


def _type_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def parse_overrides(schema: type, overrides: Sequence[str]) -> list[tuple[str, Any]]:
    """Parse ``key=value`` strings; values are YAML scalars, list fields also accept ``a,b,c``."""
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise WorkbenchError(f"bad argument {item!r}: overrides are key=value (see --help for the keys)")
        key, raw = item.split("=", 1)
        key = key.strip()
        _, hint = _field_at(schema, key)
        if _is_list(hint) and not raw.strip().startswith("["):
            value: Any = [yaml.safe_load(v) for v in raw.split(",") if v.strip() != ""]
        else:
            try:
                value = yaml.safe_load(raw) if raw != "" else ""
            except yaml.YAMLError:
                value = raw
            if hint is str or (typing.get_origin(hint) is typing.Union and str in typing.get_args(hint)):
                value = raw if value is not None or raw.lower() not in ("null", "none", "~") else None
        parsed.append((key, value))
    return parsed


def _check_keys(schema: type, data: Any, prefix: str = "") -> None:
    if not isinstance(data, dict):
        raise WorkbenchError(f"config section '{prefix or '<root>'}' must be a mapping of key: value")
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        _, hint = _field_at(schema, dotted)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            _check_keys(schema, value, dotted)


def find_preset(preset: str | Path, presets_dir: Path | None) -> Path:
    """A preset by path, or by name among ``presets_dir/*.yaml``."""
    path = Path(preset)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    available = sorted(p.stem for p in presets_dir.glob("*.yaml")) if presets_dir and presets_dir.is_dir() else []
    if presets_dir is not None and (presets_dir / f"{preset}.yaml").is_file():
        return presets_dir / f"{preset}.yaml"
    raise WorkbenchError(
        f"unknown preset '{preset}'{suggest(str(preset), available)}; "
        f"valid: {', '.join(available) or '(none)'} or a path to a .yaml file"
    )


def _merge_value(cfg: DictConfig, key: str, value: Any, source: str) -> None:
    try:
        OmegaConf.update(cfg, key, value, merge=True)
    except OmegaConfBaseException:
        hint = _field_at_cfg_type(cfg, key)
        raise WorkbenchError(f"bad value for '{key}' ({source}): {value!r} is not a valid {hint}") from None


def _field_at_cfg_type(cfg: DictConfig, key: str) -> str:
    try:
        schema = OmegaConf.get_type(cfg)
        return _type_name(_field_at(schema, key)[1]) if schema else "value"
    except WorkbenchError:
        return "value"


def flatten_dict(data: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    items: dict[str, Any] = {}
    for k, v in data.items():
        dotted = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            items.update(flatten_dict(v, dotted))
        else:
            items[dotted] = v
    return items


def check_choices(cfg: Any, prefix: str = "") -> None:
    """Validate every field that declares ``choices``; recurse into nested dataclasses."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        dotted = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(value):
            check_choices(value, dotted)
            continue
        choices = f.metadata.get("choices")
        if not choices:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if v not in choices:
                valid = ", ".join(map(str, choices))
                raise WorkbenchError(
                    f"bad value for '{dotted}': {v!r}{suggest(str(v), map(str, choices))}; valid: {valid}"
                )


_BOUND_TEXT = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
_BOUND_OK = {
    "ge": lambda v, b: v >= b,
    "gt": lambda v, b: v > b,
    "le": lambda v, b: v <= b,
    "lt": lambda v, b: v < b,
}


def constraint_text(f: dataclasses.Field) -> str:
    """The declared bounds of a field, e.g. ``≥ 0, < 1`` (empty when it declares none)."""
    return ", ".join(f"{_BOUND_TEXT[k]} {v}" for k, v in f.metadata.get("bounds", {}).items())


def _numbers(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _numbers(v)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def _lookup(root: Any, prefix: str, key: str) -> tuple[bool, Any]:
    """The value of ``key``: a sibling in the section ``prefix`` first, else a dotted path from the root."""
    for path in ([f"{prefix}.{key}"] if prefix else []) + [key]:
        obj: Any = root
        for part in path.split("."):
            if not dataclasses.is_dataclass(obj) or not hasattr(obj, part):
                break
            obj = getattr(obj, part)
        else:
            return True, obj
    return False, None


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def check_constraints(cfg: Any, root: Any = None, prefix: str = "") -> None:
    """Refuse a NaN/inf, a number outside its declared bounds, an empty required list, or contradictory keys.

    The error is one line naming the key (dotted as the user types it) and what it must be.
    """
    root = cfg if root is None else root
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        dotted = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(value):
            check_constraints(value, root, dotted)
            continue
        meta = f.metadata
        for v in _numbers(value):
            if isinstance(v, float) and (math.isnan(v) or (meta.get("finite", True) and math.isinf(v))):
                raise WorkbenchError(f"bad value for '{dotted}': {v}; must be a finite number")
            for kind, bound in meta.get("bounds", {}).items():
                if not _BOUND_OK[kind](v, bound):
                    raise WorkbenchError(f"bad value for '{dotted}': {v}; must be {_BOUND_TEXT[kind]} {bound}")
        if meta.get("nonempty") and isinstance(value, (list, tuple)) and len(value) == 0:
            raise WorkbenchError(f"bad value for '{dotted}': empty list; give at least one value, e.g. {dotted}=a,b")
        if value == _default(f):
            continue
        for other, allowed in meta.get("requires", {}).items():
            found, actual = _lookup(root, prefix, other)
            if found and actual not in allowed:
                need = " or ".join(f"{other}={a}" for a in allowed)
                raise WorkbenchError(
                    f"'{dotted}={value}' needs {need} ({other} is {actual!r}); drop '{dotted}' or change '{other}'"
                )
        for other in meta.get("excludes", ()):
            found, actual = _lookup(root, prefix, other)
            other_field = _field_or_none(root, prefix, other)
            if found and other_field is not None and actual != _default(other_field):
                raise WorkbenchError(f"'{dotted}' and '{other}' contradict each other; give only one of them")


def _field_or_none(root: Any, prefix: str, key: str) -> dataclasses.Field | None:
    for path in ([f"{prefix}.{key}"] if prefix else []) + [key]:
        try:
            return _field_at(type(root), path)[0]
        except WorkbenchError:
            continue
    return None


def resolve_config(
    schema: type[T],
    overrides: Sequence[str] = (),
    preset: str | Path | None = None,
    presets_dir: Path | None = None,
    base: dict | None = None,
) -> T:
    """Build a validated config object: defaults → ``base`` (a saved config) → preset → overrides."""
    cfg = OmegaConf.structured(schema)
    layers: list[tuple[str, dict]] = []
    if base is not None:
        layers.append(("saved config", base))
    if preset is not None:
        path = find_preset(preset, presets_dir)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise WorkbenchError(f"preset {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
        layers.append((f"preset {path.name}", data))
    for source, data in layers:
        _check_keys(schema, data)
        for key, value in flatten_dict(data).items():
            _merge_value(cfg, key, value, source)
    for key, value in parse_overrides(schema, overrides):
        _merge_value(cfg, key, value, "command line")
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        raise WorkbenchError(f"invalid config: {str(exc).splitlines()[0]}") from None
    check_choices(obj)
    check_constraints(obj)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj  # type: ignore[return-value]


def to_dict(cfg: Any) -> dict:
    """A plain dict of a config object (for config.yaml and summaries)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def describe(schema: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """Rows ``(key, type, default, help)`` for ``--help``, nested keys dotted."""
    rows = []
    hints = _hints(schema)
    for f in dataclasses.fields(schema):
        key = f"{prefix}.{f.name}" if prefix else f.name
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            rows.extend(describe(hint, key))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f.metadata.get("help", "")
        if f.metadata.get("choices"):
            help_text += f" [{'|'.join(map(str, f.metadata['choices']))}]"
        if constraint_text(f):
            help_text += f" [{constraint_text(f)}]"
        rows.append((key, _type_name(hint), repr(default), help_text.strip()))
    return rows
