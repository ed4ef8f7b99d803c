"""Bad input: one line, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from continual.benchmarks import Protocol
from workbench.errors import WorkbenchError


def _check_refused(result, run_root: Path, needle: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.stderr
    assert not any(p.is_file() for p in run_root.rglob("*")) if run_root.exists() else True


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["method=icarl"], "method"),
        (["benchmark=split-mnist-7"], "benchmark"),
        (["benchmark=cifar100-b50-10"], "cifar100"),
        (["benchmark=split-digits-5", "class_order=0,1,2"], "class_order"),
        (["benchmark=split-digits-5", "etag.temperature=0"], "etag.temperature"),
        (["benchmark=split-digits-5", "validation=1.0"], "validation"),
        (["benchmark=split-digits-5", "baseline.ewc_lambda=-1"], "baseline.ewc_lambda"),
        (["benchmark=split-digits-5", "lr=nan"], "lr"),
        (["benchmark=split-digits-5", "task_sizes=4,3,2"], "task_sizes"),
        (["benchmark=fmnist-b4-3", "task_sizes=5,2,2"], "task_sizes"),
        (["benchmark=split-digits-5", "method=ncm", "task_sizes=1,3,2,2,2"], "first task"),
        (["benchmark=split-digits-5", "method=fecam", "task_sizes=1,3,2,2,2"], "first task"),
        (["benchmark=split-digits-5", "methods=naive,fecam", "task_sizes=1,3,2,2,2"], "first task"),
        # a setting the compare's sweep grid would split (workbench.sweep.grid.refuse_split, shared with compress)
        (["benchmark=split-digits-5", "methods=naive", "seeds=0", "data_root=/no/a,b"], "'data_root' holds a comma"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(cli, run_root: Path, tmp_path: Path, args: list, needle: str) -> None:
    command = "compare" if any(a.startswith("methods=") for a in args) else "run"
    result = cli("cil", command, f"run_root={run_root}", f"data_root={tmp_path / 'no-data'}", *args)
    _check_refused(result, run_root, needle)


def test_uneven_class_splits_are_refused() -> None:
    assert Protocol("p", "digits", 5, 0, "mlp").classes_per_task(10) == [2] * 5
    assert Protocol("p", "cifar100", 10, 50, "resnet18").classes_per_task(100) == [50] + [5] * 10
    with pytest.raises(WorkbenchError, match="do not divide"):
        Protocol("p", "digits", 3, 0, "mlp").classes_per_task(10)
    with pytest.raises(WorkbenchError, match="do not divide"):
        Protocol("p", "cifar100", 7, 50, "resnet18").classes_per_task(100)


def test_validation_split_is_per_class_and_disjoint() -> None:
    import torch

    from continual.benchmarks import default_class_order, validation_indices

    targets = torch.tensor([0] * 10 + [1] * 20 + [2] * 5)
    train, val = validation_indices(targets, 0.2, seed=3)
    assert set(train.tolist()).isdisjoint(val.tolist()) and len(train) + len(val) == len(targets)
    assert torch.bincount(targets[val]).tolist() == [2, 4, 1]
    assert torch.equal(validation_indices(targets, 0.2, seed=3)[1], val)
    assert sorted(default_class_order(10, 0)) == list(range(10))
    assert default_class_order(10, 0) == default_class_order(10, 0) != default_class_order(10, 1)
