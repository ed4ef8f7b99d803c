"""End-to-end ``workbench cil run`` on short digits streams (in-process: Avalanche is imported once).

Every method registered in ``continual.registry.CIL_METHODS`` gets the two-task smoke test and the exact-resume
test automatically (with its ``tiny_overrides``), so a method cannot be registered untested."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from continual.registry import CIL_METHODS
from workbench.cli import main

FAST = ["benchmark=split-digits-5", "epochs=1", "progress=false"]
METHODS = CIL_METHODS.names()


def _run(run_root: Path, *args: str) -> Path:
    before = set(run_root.rglob("config.yaml")) if run_root.exists() else set()
    method = next((a.split("=", 1)[1] for a in args if a.startswith("method=")), "etag")
    tiny = list(CIL_METHODS[method].tiny_overrides)
    assert main(["cil", "run", *FAST, *tiny, f"run_root={run_root}", *args]) == 0
    new = set(run_root.rglob("config.yaml")) - before
    assert len(new) == 1
    return next(iter(new)).parent


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.parametrize("method", METHODS)
def test_two_tasks_every_method(method: str, run_root: Path) -> None:
    run_dir = _run(run_root, f"method={method}", "max_tasks=2")
    s = _summary(run_dir)
    assert s["method"] == method and s["benchmark"] == "split-digits-5" and s["seed"] == 0
    matrix = s["acc_matrix"]
    assert len(matrix) == 2 and all(len(row) == 5 for row in matrix)
    assert [sum(a is not None for a in row) for row in matrix] == [1, 2]
    assert all(0.0 <= a <= 100.0 for row in matrix for a in row if a is not None)
    assert len(s["seen_acc"]) == 2 and len(s["seconds_per_task"]) == 2
    for key in ("avg_incremental_acc", "last_acc", "avg_forgetting"):
        assert isinstance(s[key], float)
    assert s["last_acc"] == s["seen_acc"][-1]
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert sorted(cfg["class_order"]) == list(range(10)) and cfg["model"] == "mlp"
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert (run_dir / "plots" / "acc_matrix.png").is_file()
    assert list((run_dir / "avalanche").glob("events.out.tfevents.*"))
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["cil/task"] for x in lines if "cil/task" in x] == [0, 1]


@pytest.mark.parametrize(("method", "tasks"), [(m, 3 if m in ("etag", "ewc") else 2) for m in METHODS])
def test_resume_after_first_task_matches_uninterrupted(method: str, tasks: int, run_root: Path) -> None:
    full_dir = _run(run_root, f"method={method}", f"max_tasks={tasks}", "seed=1")
    full = _summary(full_dir)
    part_dir = _run(run_root, f"method={method}", "max_tasks=1", "seed=1")
    assert _summary(part_dir)["tasks_done"] == 1
    assert main(["cil", "run", "--resume", str(part_dir), f"max_tasks={tasks}"]) == 0
    resumed = _summary(part_dir)
    assert resumed["acc_matrix"] == full["acc_matrix"]
    assert resumed["class_order"] == full["class_order"]
    steps = [json.loads(x)["step"] for x in (part_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)
    _assert_same(_strategy_state(part_dir), _strategy_state(full_dir), "strategy")


def _strategy_state(run_dir: Path) -> dict:
    from continual.run import CHECKPOINT_FORMAT
    from workbench.checkpoint import load_checkpoint

    return load_checkpoint(run_dir / "checkpoints" / "last.pt", CHECKPOINT_FORMAT)["strategy"]


def _assert_same(a, b, where: str) -> None:
    """Everything the method checkpoints (weights, plugin state, classifier statistics) is bit-identical."""
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_benchmark_brings_its_protocol_settings(run_root: Path, capsys) -> None:
    """``benchmark=X`` trains with preset X's settings (issue 21 item 10); typed keys still win."""
    run_dir = _run(run_root, "method=naive", "max_tasks=1", "lr=0.005")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (cfg["optimizer"], cfg["batch_size"], cfg["model"]) == ("adam", 32, "mlp")
    assert cfg["lr"] == 0.005 and cfg["epochs"] == 1
    assert "preset: split-digits-5" in capsys.readouterr().out


def test_compare_honours_jobs(run_root: Path, capsys) -> None:
    """jobs=1 reaches the compare's sweep: sweep.yaml records it and the driver runs one run at a time."""
    tiny = list(CIL_METHODS["naive"].tiny_overrides)
    args = [*FAST, *tiny, "max_tasks=1", "methods=naive", "seeds=0", f"run_root={run_root}"]
    assert main(["cil", "compare", *args, "jobs=1", "launcher=local", "retries=0"]) == 0
    assert "jobs=1," in capsys.readouterr().out
    compare_dir = next(run_root.glob("cil/*/*/table.md")).parent
    options = yaml.safe_load((compare_dir / "sweep.yaml").read_text())["options"]
    assert (options["launcher"], options["jobs"], options["retries"]) == ("local", 1, 0)
    (summary,) = (compare_dir / "runs").rglob("summary.json")
    mtime = summary.stat().st_mtime_ns
    # a resumed compare reuses the finished run although its config holds the class order it drew
    assert main(["cil", "compare", "--resume", str(compare_dir), "jobs=2"]) == 0
    assert list((compare_dir / "runs").rglob("summary.json")) == [summary]
    assert summary.stat().st_mtime_ns == mtime


def test_resume_of_a_finished_run_changes_nothing(run_root: Path, capsys) -> None:
    run_dir = _run(run_root, "method=naive", "max_tasks=1")
    before = (run_dir / "summary.json").read_text()
    assert _summary(run_dir)["complete"] is True  # it did what max_tasks asked
    assert main(["cil", "run", "--resume", str(run_dir)]) == 0
    assert "nothing to resume" in capsys.readouterr().out
    assert (run_dir / "summary.json").read_text() == before
