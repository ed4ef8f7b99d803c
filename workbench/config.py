"""Typed configs: a dataclass schema, filled from a YAML preset and ``key=value`` overrides (OmegaConf).

Every command has one dataclass config inheriting :class:`CommonConfig`. Resolution order:
schema defaults → preset YAML → command-line overrides. An unknown key, a wrong type or a value outside a
field's choices raises :class:`WorkbenchError` naming the key and the valid choices, before anything is
written.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from workbench.errors import WorkbenchError, suggest

T = TypeVar("T")


def opt(default: Any, help: str = "", choices: Sequence[Any] | None = None) -> Any:
    """A config field with a default, a help text and optional valid choices."""
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None}
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
        rows.append((key, _type_name(hint), repr(default), help_text.strip()))
    return rows
