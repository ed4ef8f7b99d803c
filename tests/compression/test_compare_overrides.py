"""``workbench compress compare overrides=...``: a value the sub-runs' sweep grid would split is refused (one line,
exit 2, nothing written), with the core's check that ``cil compare`` uses too (``workbench.sweep.grid``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from compression.compare import CompareConfig
from workbench.cli import main
from workbench.config import resolve_config


@pytest.mark.parametrize(
    ("protocol", "override", "needle"),
    [
        ("prune-fmnist", "prune.criterion=l1,l2", "'prune.criterion' holds a comma"),
        ("prune-fmnist", "name=a,b", "'name' holds a comma"),
        ("prune-fmnist", "train.epochs=1:3", "'train.epochs' holds a range"),
        ("prune-fmnist", "prune.cpmc_weights=1;2", "'prune.cpmc_weights' holds a ';'"),
        ("sglp-fmnist", "sglp.name=x,y", "'sglp.name' holds a comma"),
        ("kd-fmnist", "student_widths=4,8;8,16", "'student_widths' holds a ';'"),
        ("kd-fmnist", "dataset=digits,fashion-mnist", "'dataset' holds a comma"),
    ],
)
def test_an_override_the_grid_would_split_is_refused(capsys, tmp_path: Path, protocol, override, needle):
    root = tmp_path / "runs"
    code = main(["compress", "compare", f"protocol={protocol}", f'overrides=["{override}"]', f"run_root={root}",
                 "seeds=0"])  # fmt: skip
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert not root.exists() or not any(p.is_file() for p in root.rglob("*"))


def test_one_valued_overrides_pass():
    overrides = '["prune.cpmc_weights=[1,2,3]","subset=2000","device=cuda:0","round_to=8"]'
    cfg = resolve_config(CompareConfig, ["protocol=prune-fmnist", f"overrides={overrides}"])
    assert cfg.overrides[0] == "prune.cpmc_weights=[1,2,3]"
    resolve_config(CompareConfig, ["protocol=kd-fmnist", 'overrides=["student_widths=[4,8,16]","epochs=2"]'])
