"""``workbench compress kd`` on the command line: bad input gives one line and exit 2, nothing written.

The CLI's ``main`` runs in-process (a subprocess would spend most of its time importing torch); the
core's own tests cover the ``python -m workbench.cli`` entry.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from workbench.cli import main


@pytest.fixture
def cli(capsys):
    def run(*args: str) -> SimpleNamespace:
        code = main(list(args))
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return run


def _one_line_error(result) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_missing_teacher_directory(cli, tmp_path):
    root = tmp_path / "runs"
    result = cli("compress", "kd", "method=kd", f"teacher={tmp_path / 'nope'}", f"run_root={root}")
    assert "teacher run directory" in _one_line_error(result)
    assert not root.exists() or not any(root.rglob("config.yaml"))


def test_teacher_of_another_kind_and_student_unfit_for_the_method(cli, tmp_path):
    other = tmp_path / "other"
    (other / "checkpoints").mkdir(parents=True)
    (other / "config.yaml").write_text("method: kd\n")
    (other / "summary.json").write_text(json.dumps({"command": "kd"}))
    root = tmp_path / "runs"
    result = cli("compress", "kd", "method=hsakd", f"teacher={other}", f"run_root={root}")
    assert "not a `workbench train` run" in _one_line_error(result)
    result = cli("compress", "kd", "method=ddnn-ekd", "model=small_cnn", f"run_root={root}")
    assert "residual" in _one_line_error(result)
    result = cli("compress", "kd", "method=mcl", "cohort=1", f"run_root={root}")
    assert "cohort" in _one_line_error(result)
    assert not root.exists() or not any(root.rglob("config.yaml"))


def test_demo_preset_runs_from_the_command_line(cli, tmp_path):
    root = tmp_path / "runs"
    result = cli("compress", "kd", "--preset", "kd-demo", "method=student", "subset=100", "epochs=1",
                 "progress=false", f"run_root={root}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    (summary,) = root.rglob("summary.json")
    data = json.loads(summary.read_text())
    assert data["method"] == "student" and data["seed"] == 0 and data["student_acc"] >= 0


def test_kd_takes_the_dataset_of_its_teacher_run_unless_told_otherwise(cli, tmp_path):
    from compression.kd.config import KDConfig
    from workbench.config import resolve_config

    root = tmp_path / "runs"
    result = cli("train", "dataset=digits", "model=small_cnn", "epochs=1", "subset=100", "test_subset=30",
                 "batch_size=50", "progress=false", f"run_root={root}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    (teacher,) = (p.parent for p in (root / "train").rglob("summary.json"))
    tiny = ["student=small_cnn", "student_widths=[4,8,16]", "epochs=1", "subset=60", "test_subset=30", "batch_size=30"]
    result = cli("compress", "kd", "method=kd", f"teacher={teacher}", *tiny, "progress=false", f"run_root={root}")
    assert result.returncode == 0, result.stderr
    (summary,) = (root / "compress").rglob("summary.json")
    assert json.loads(summary.read_text())["dataset"] == "digits"
    assert "dataset: digits" in (summary.parent / "config.yaml").read_text()  # a resumed run keeps it
    # told otherwise: the given dataset wins; no teacher: the default
    assert resolve_config(KDConfig, ["method=kd", f"teacher={teacher}", "dataset=fashion-mnist"]).dataset == (
        "fashion-mnist"
    )
    assert resolve_config(KDConfig, ["method=mixskd"]).dataset == "fashion-mnist"
