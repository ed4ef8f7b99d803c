import dataclasses

import pytest

from workbench.config import CommonConfig, describe, opt, resolve_config, to_dict
from workbench.errors import WorkbenchError


@dataclasses.dataclass
class Sub:
    width: int = opt(8, "width")


@dataclasses.dataclass
class Cfg(CommonConfig):
    epochs: int = opt(10, "epochs")
    lr: float = opt(0.1, "learning rate")
    method: str = opt("kd", "method", choices=("kd", "hsakd"))
    methods: list[str] = opt(["kd"], "methods", choices=("kd", "hsakd", "dml"))
    seeds: list[int] = opt([0], "seeds")
    limit: int | None = opt(None, "optional")
    sub: Sub = dataclasses.field(default_factory=Sub)


def test_defaults_preset_and_overrides_in_order(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("epochs: 3\nlr: 0.5\nsub:\n  width: 4\n")
    cfg = resolve_config(Cfg, ["lr=1e-3", "seeds=0,1,2", "methods=kd,dml", "sub.width=16", "limit=5"], preset=preset)
    assert (cfg.epochs, cfg.lr, cfg.seeds, cfg.methods, cfg.sub.width, cfg.limit) == (
        3,
        1e-3,
        [0, 1, 2],
        ["kd", "dml"],
        16,
        5,
    )
    assert to_dict(cfg)["sub"] == {"width": 16}


@pytest.mark.parametrize(
    "override, needle",
    [
        ("epoch=3", "unknown config key 'epoch' (did you mean 'epochs'?)"),
        ("epochs=abc", "bad value for 'epochs'"),
        ("method=hsakdd", "bad value for 'method': 'hsakdd' (did you mean 'hsakd'?); valid: kd, hsakd"),
        ("methods=kd,mcl", "bad value for 'methods': 'mcl'"),
        ("sub.height=2", "unknown config key 'sub.height'"),
        ("epochs", "overrides are key=value"),
    ],
)
def test_bad_input_names_the_key(override, needle):
    with pytest.raises(WorkbenchError) as err:
        resolve_config(Cfg, [override])
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_preset_with_unknown_key_and_unknown_preset(tmp_path):
    preset = tmp_path / "bad.yaml"
    preset.write_text("epocs: 3\n")
    with pytest.raises(WorkbenchError, match="unknown config key 'epocs'"):
        resolve_config(Cfg, [], preset=preset)
    (tmp_path / "fast.yaml").write_text("epochs: 1\n")
    with pytest.raises(WorkbenchError, match="unknown preset 'fats'.*did you mean 'fast'"):
        resolve_config(Cfg, [], preset="fats", presets_dir=tmp_path)
    assert resolve_config(Cfg, [], preset="fast", presets_dir=tmp_path).epochs == 1


def test_describe_lists_every_key_with_type_and_default():
    rows = {r[0]: r for r in describe(Cfg)}
    assert set(rows) >= {"seed", "device", "name", "run_root", "epochs", "lr", "method", "sub.width"}
    assert rows["epochs"][1:3] == ("int", "10")
    assert "[kd|hsakd]" in rows["method"][3]
