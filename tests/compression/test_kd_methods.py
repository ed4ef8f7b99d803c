"""Short runs of every KD-family method on a tiny digits subset, in-process (the CLI is tested in test_kd_cli)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compression.kd.config import KDConfig
from compression.kd.run import run_kd
from workbench.config import resolve_config
from workbench.runs import create_run

TINY = ["dataset=digits", "subset=120", "test_subset=60", "epochs=1", "batch_size=50", "lr=0.05", "progress=false"]
STUDENT = ["student=small_cnn", "student_widths=[4,8,16]"]


def train_teacher(root: Path) -> Path:
    from workbench.commands.train import TrainCommandConfig
    from workbench.commands.train import run as train_run

    cfg = resolve_config(
        TrainCommandConfig,
        ["dataset=digits", "subset=300", "test_subset=60", "model=small_cnn", "epochs=2", "batch_size=50",
         "lr=0.05", "progress=false", f"run_root={root}"],
    )  # fmt: skip
    run = create_run("train", cfg, "teacher")
    train_run(cfg, run)
    run.close()
    return run.dir


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    return train_teacher(tmp_path_factory.mktemp("teacher"))


def run_method(root: Path, overrides: list[str]) -> tuple[dict, Path]:
    cfg = resolve_config(KDConfig, [*TINY, f"run_root={root}", *overrides])
    run = create_run("compress", cfg, cfg.method)
    try:
        run_kd(cfg, run)
    finally:
        run.close()
    return json.loads((run.dir / "summary.json").read_text()), run.dir


@pytest.mark.parametrize("method", ["student", "kd", "hsakd"])
def test_teacher_methods_run_and_summarise(method, teacher_dir, tmp_path):
    summary, run_dir = run_method(tmp_path, [f"method={method}", f"teacher={teacher_dir}", *STUDENT])
    for key in ("method", "student_acc", "macs", "params", "seed"):
        assert key in summary
    assert summary["method"] == method and 0.0 <= summary["student_acc"] <= 100.0
    assert summary["macs"] < 10_000  # the 4/8/16 student on 8x8 digits
    assert (run_dir / "checkpoints" / "model.pt").is_file()
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    if method == "student":
        assert "teacher_acc" not in summary
    else:
        teacher_summary = json.loads((teacher_dir / "summary.json").read_text())
        assert summary["teacher_acc"] == pytest.approx(teacher_summary["test_acc"])  # same test subset
        terms = {"kd": ("train/ce", "train/kd"), "hsakd": ("train/ce", "train/main_kd", "train/aux1_kd")}[method]
        assert all(t in metrics[-1] for t in terms)


def test_mixskd_runs_and_logs_its_terms(tmp_path):
    summary, run_dir = run_method(tmp_path, ["method=mixskd", *STUDENT])
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    for t in ("ce", "logit_kd", "feature", "self_teacher_ce", "self_teacher_kd"):
        assert f"train/{t}" in last
    assert summary["method"] == "mixskd" and "student_acc" in summary


@pytest.mark.parametrize("method", ["mcl", "ctsl-mkt"])
def test_cohort_methods_report_every_member(method, tmp_path):
    summary, run_dir = run_method(tmp_path, [f"method={method}", "cohort=3", *STUDENT])
    assert len(summary["member_acc"]) == 3
    assert summary["student_acc"] == pytest.approx(sum(summary["member_acc"]) / 3)
    states = [torch.load(run_dir / "checkpoints" / f"member{i}.pt", weights_only=True)["state_dict"] for i in range(3)]
    assert any(not torch.equal(states[0][k], states[1][k]) for k in states[0])  # members are distinct networks
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert all(f"test/acc_member{i}" in last for i in range(3))


def test_ddnn_ekd_reports_each_depth_with_growing_macs(tmp_path):
    summary, run_dir = run_method(tmp_path, ["method=ddnn-ekd", "model=resnet20", "subset=50", "test_subset=30"])
    depths = summary["depths"]
    assert list(depths) == ["d1", "d2", "d3"]
    macs = [depths[d]["macs"] for d in depths]
    assert macs[0] < macs[1] < macs[2] == summary["macs"]
    assert summary["student_acc"] == depths["d3"]["acc"]
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"train/kd_d1", "train/at_d2", "test/acc_d1", "test/acc_d2"} <= set(last)


def test_interrupted_mixskd_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """MixSKD keeps trainable parts (branches, self-teacher) in its objective and draws λ from the RNG."""
    from workbench.runs import open_run
    from workbench.trainer import Trainer

    overrides = ["method=mixskd", *STUDENT, "epochs=2", "subset=100"]
    _, straight = run_method(tmp_path / "a", overrides)
    original = Trainer._run_epoch

    def stop_after_first_epoch(self):
        logs = original(self)
        if self.epoch == 1:
            raise KeyboardInterrupt
        return logs

    monkeypatch.setattr(Trainer, "_run_epoch", stop_after_first_epoch)
    cfg = resolve_config(KDConfig, [*TINY, f"run_root={tmp_path / 'b'}", *overrides])
    first = create_run("compress", cfg, cfg.method)
    with pytest.raises(KeyboardInterrupt):
        run_kd(cfg, first)
    first.close()
    monkeypatch.setattr(Trainer, "_run_epoch", original)
    run, saved = open_run(first.dir, "compress")
    run_kd(resolve_config(KDConfig, [], base=saved), run)
    run.close()
    a = torch.load(straight / "checkpoints" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(first.dir / "checkpoints" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
