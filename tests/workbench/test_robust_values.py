"""Every bad value is refused up front, in one line naming the key, for every command: a table built from the
commands' own config declarations (floats: NaN/inf; declared bounds: the first value outside them; non-empty
lists: empty; ``requires``/``excludes``: a contradicting pair), so a key added later is covered here."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from workbench.cli import _core_commands, _groups, load_object, main
from workbench.command import Command
from workbench.config import check_constraints, opt, resolve_config
from workbench.errors import WorkbenchError

ROOT = Path(__file__).resolve().parents[2]


def all_commands() -> list[tuple[str, Command]]:
    """``(prog, command)`` for the core's config-driven commands and every installed group's commands."""
    core, _ = _core_commands()
    found = [(f"workbench {c.name}", c) for c in core]
    for group, spec in sorted(_groups().items()):
        found += [(f"workbench {group} {c.name}", c) for c in load_object(spec).commands]
    return found


def leaves(schema: type, prefix: str = "") -> list[tuple[str, dataclasses.Field, typing.Any]]:
    hints = typing.get_type_hints(schema)
    out = []
    for f in dataclasses.fields(schema):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            out += leaves(hints[f.name], key)
        else:
            out.append((key, f, hints[f.name]))
    return out


def _is_float(hint: typing.Any) -> bool:
    return hint is float or float in typing.get_args(hint)


def _is_list(hint: typing.Any) -> bool:
    return typing.get_origin(hint) in (list, tuple) or any(
        typing.get_origin(a) in (list, tuple) for a in typing.get_args(hint)
    )


def _element(hint: typing.Any) -> typing.Any:
    for h in (hint, *typing.get_args(hint)):
        if typing.get_origin(h) in (list, tuple):
            return typing.get_args(h)[0]
    return hint


def _outside(kind: str, bound: float, integer: bool) -> float:
    step = 1 if integer else max(abs(bound) * 0.5, 0.5)
    return {"ge": bound - step, "gt": bound, "le": bound + step, "lt": bound}[kind]


def _fmt(value: typing.Any) -> str:
    if isinstance(value, float) and float(value).is_integer() and not math.isinf(value):
        return repr(value)
    return str(value)


def _other_value(f: dataclasses.Field, hint: typing.Any) -> str | None:
    """A value differing from the field's default, typed for it, or None when there is no obvious one."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    if hint is bool:
        return str(not default).lower()
    if f.metadata.get("choices"):
        other = [c for c in f.metadata["choices"] if c != default]
        return str(other[0]) if other else None
    if hint is str or str in typing.get_args(hint):
        return "something-else"
    return None


def bad_values() -> list:
    cases = []
    for prog, cmd in all_commands():
        schema = load_object(cmd.config)
        fields = {k: (f, h) for k, f, h in leaves(schema)}
        for key, f, hint in leaves(schema):
            elem = _element(hint)
            is_list = _is_list(hint)
            if _is_float(elem):
                for bad in ("nan", "inf", "-inf"):
                    if bad != "nan" and not f.metadata.get("finite", True):
                        continue
                    cases.append(pytest.param(cmd, [f"{key}={bad}"], key, id=f"{prog}:{key}={bad}"))
            for kind, bound in f.metadata.get("bounds", {}).items():
                value = _outside(kind, bound, elem is int or elem is bool)
                value = int(value) if elem is int and float(value).is_integer() else value
                cases.append(pytest.param(cmd, [f"{key}={_fmt(value)}"], key, id=f"{prog}:{key}={value}"))
            if is_list and f.metadata.get("nonempty"):
                cases.append(pytest.param(cmd, [f"{key}=[]"], key, id=f"{prog}:{key}=[]"))
            for other, allowed in f.metadata.get("requires", {}).items():
                mine = _other_value(f, hint)
                of = fields.get(other)
                choices = of[0].metadata.get("choices") if of else None
                wrong = [c for c in (choices or ()) if c not in allowed]
                if mine is not None and wrong:
                    args = [f"{key}={mine}", f"{other}={wrong[0]}"]
                    cases.append(pytest.param(cmd, args, key, id=f"{prog}:{key}+{other}={wrong[0]}"))
            for other in f.metadata.get("excludes", ()):
                mine, theirs = _other_value(f, hint), _other_value(*fields[other]) if other in fields else None
                if mine is not None and theirs is not None:
                    args = [f"{key}={mine}", f"{other}={theirs}"]
                    cases.append(pytest.param(cmd, args, key, id=f"{prog}:{key}+{other}"))
    return cases


CASES = bad_values()


def test_the_table_covers_every_command_and_the_core_probes():
    ids = {c.id for c in CASES}
    progs = {i.split(":")[0] for i in ids}
    assert {"workbench train", "workbench eval"} <= progs
    for probe in (
        "lr=nan",
        "lr=inf",
        "momentum=-0.5",
        "weight_decay=-0.5",
        "num_workers=-1",
        "epochs=0",
        "batch_size=0",
    ):
        assert f"workbench train:{probe}" in ids, probe
    assert "workbench train:nesterov+optimizer=adam" in ids


@pytest.mark.parametrize("cmd, overrides, key", CASES)
def test_bad_value_is_refused_in_one_line_naming_the_key(cmd, overrides, key):
    schema = load_object(cmd.config)
    with pytest.raises(WorkbenchError) as err:
        resolve_config(schema, overrides)
    message = str(err.value)
    assert f"'{key}" in message, message
    assert "\n" not in message


@pytest.mark.parametrize("prog, cmd", all_commands(), ids=[p for p, _ in all_commands()])
def test_defaults_of_every_command_satisfy_its_declared_constraints(prog, cmd):
    defaults = OmegaConf.to_object(OmegaConf.structured(load_object(cmd.config)))
    check_constraints(defaults)


def test_cli_refuses_before_any_directory_exists(tmp_path, capsys):
    """Every command that makes a run: a NaN is one line on stderr, exit 2, and no run root."""
    for prog, cmd in all_commands():
        schema = load_object(cmd.config)
        key = next((k for k, f, h in leaves(schema) if _is_float(_element(h))), None)
        if key is None or not cmd.creates_run:
            continue
        root = tmp_path / prog.replace(" ", "_")
        status = main([*prog.split()[1:], f"{key}=nan", f"run_root={root}"])
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 2 and len(err) == 1 and f"'{key}'" in err[0], (prog, err)
        assert not root.exists(), prog


@dataclasses.dataclass
class Toy:
    optimizer: str = opt("sgd", "optimizer", choices=("sgd", "adam"))
    nesterov: bool = opt(False, "Nesterov", requires={"optimizer": ("sgd",)})
    model: str = opt("", "model")
    student: str = opt("", "student", excludes=("model",))
    gamma: float = opt(0.99, "discount", gt=0, le=1)
    rates: list[float] = opt([0.1], "rates", ge=0)
    grid: list[int] = opt([], "optional list")
    clip: float = opt(math.inf, "no clip by default", finite=False, gt=0)


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["gamma=1.5"], "bad value for 'gamma': 1.5; must be ≤ 1"),
        (["gamma=0"], "bad value for 'gamma': 0.0; must be > 0"),
        (["gamma=nan"], "bad value for 'gamma': nan; must be a finite number"),
        (["rates=0.1,-0.2"], "bad value for 'rates': -0.2; must be ≥ 0"),
        (["rates=0.1,nan"], "bad value for 'rates': nan"),
        (["rates=[]"], "bad value for 'rates': empty list"),
        (["nesterov=true", "optimizer=adam"], "'nesterov=True' needs optimizer=sgd (optimizer is 'adam')"),
        (["student=resnet8", "model=resnet20"], "'student' and 'model' contradict each other"),
        (["clip=nan"], "bad value for 'clip': nan"),
    ],
)
def test_declared_constraints(overrides, needle):
    with pytest.raises(WorkbenchError) as err:
        resolve_config(Toy, overrides)
    assert needle in str(err.value)


def test_declared_constraints_accept_the_good_values():
    cfg = resolve_config(Toy, ["grid=[]", "clip=inf", "gamma=1", "nesterov=true", "student=x"])
    assert cfg.grid == [] and math.isinf(cfg.clip) and cfg.gamma == 1.0 and cfg.nesterov


def test_help_shows_the_bounds(capsys):
    assert main(["train", "--help"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("momentum"))
    assert "[≥ 0, < 1]" in line


def test_command_pieces_sit_in_a_leaf_and_checkpoint_does_not_import_prune():
    code = (
        "import sys, workbench.command, workbench.checkpoint, workbench.commands;"
        "bad = [m for m in sys.modules if m == 'workbench.cli' or m.startswith('workbench.prune')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
