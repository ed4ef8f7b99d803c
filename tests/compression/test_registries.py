"""Registry-wide tests: every registered KD method, filter-pruning method and SGLP unit-selection rule runs
end to end on tiny digits runs and resumes to the same weights. A method registered without passing these
cannot ship; nothing here names a method, so a new registration is tested without editing this file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compression.kd import KD_METHODS
from compression.kd.config import KDConfig
from compression.kd.run import run_kd
from compression.pruning import FILTER_METHODS, SGLP_RULES
from compression.pruning.config import PruneConfig, SGLPConfig
from compression.pruning.run import run_prune, run_sglp
from workbench.config import resolve_config
from workbench.runs import create_run, open_run
from workbench.trainer import Trainer

KD_TINY = ["dataset=digits", "subset=80", "test_subset=40", "batch_size=40", "lr=0.05", "progress=false",
           "student=small_cnn", "student_widths=[4,8,16]"]  # fmt: skip
PRUNE_TINY = ["subset=80", "test_subset=40", "batch_size=40", "lr=0.05", "progress=false", "eval_batch_size=64"]
SGLP_TINY = [*PRUNE_TINY, "probe_samples=32", "probe_batch_size=32", "importance_batches=1",
             "importance_batch_size=16", "subset_cap=4", "keep_units=0.5"]  # fmt: skip
PRUNE_ONLY = ["target_macs=0.6", "speed_batch=4", "speed_repeats=1"]


def _train(root: Path, model: str) -> Path:
    from workbench.commands.train import TrainCommandConfig
    from workbench.commands.train import run as train_run

    cfg = resolve_config(
        TrainCommandConfig,
        ["dataset=digits", "subset=200", "test_subset=40", f"model={model}", "epochs=1", "batch_size=50",
         "lr=0.05", "progress=false", f"run_root={root}"],
    )  # fmt: skip
    run = create_run("train", cfg, model)
    try:
        train_run(cfg, run)
    finally:
        run.close()
    return run.dir


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("teacher"), "small_cnn")


@pytest.fixture(scope="module")
def resnet_dir(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("source"), "resnet20")


def _run(schema: type, fn, overrides: list[str], name: str) -> Path:
    cfg = resolve_config(schema, overrides)
    run = create_run("compress", cfg, name)
    try:
        fn(cfg, run)
    finally:
        run.close()
    return run.dir


def _interrupted_then_resumed(schema: type, fn, overrides: list[str], name: str, monkeypatch) -> Path:
    """Stop the run after its first epoch (as Ctrl-C would), then resume it from its directory."""
    original = Trainer._run_epoch

    def stop_after_first_epoch(self):
        logs = original(self)
        if self.epoch == 1:
            raise KeyboardInterrupt
        return logs

    monkeypatch.setattr(Trainer, "_run_epoch", stop_after_first_epoch)
    cfg = resolve_config(schema, overrides)
    first = create_run("compress", cfg, name)
    with pytest.raises(KeyboardInterrupt):
        fn(cfg, first)
    first.close()
    monkeypatch.setattr(Trainer, "_run_epoch", original)
    run, saved = open_run(first.dir, "compress")
    try:
        fn(resolve_config(schema, [], base=saved), run)
    finally:
        run.close()
    return first.dir


def _same_weights(a: Path, b: Path, files: list[str]) -> None:
    for file in files:
        x = torch.load(a / "checkpoints" / file, weights_only=True)["state_dict"]
        y = torch.load(b / "checkpoints" / file, weights_only=True)["state_dict"]
        assert x.keys() == y.keys()
        assert all(torch.equal(x[k], y[k]) for k in x), file


def _kd_overrides(method: str, teacher: Path, root: Path, epochs: int) -> list[str]:
    entry = KD_METHODS[method]
    extra = [f"teacher={teacher}"] if entry.needs_teacher else []
    return [*KD_TINY, f"method={method}", f"epochs={epochs}", f"run_root={root}", *extra, *entry.tiny_overrides]


def _model_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt") if p.name == "model.pt" or "member" in p.name)


@pytest.mark.parametrize("method", KD_METHODS.names())
def test_every_kd_method_runs_end_to_end(method, teacher_dir, tmp_path):
    run_dir = _run(KDConfig, run_kd, _kd_overrides(method, teacher_dir, tmp_path, 1), method)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == method and summary["epochs"] == 1
    assert 0.0 <= summary["student_acc"] <= 100.0 and summary["macs"] > 0 and summary["params"] > 0
    assert _model_files(run_dir)  # the student(s), loadable by `workbench eval`
    assert ("teacher_acc" in summary) == KD_METHODS[method].needs_teacher


@pytest.mark.parametrize("method", KD_METHODS.names())
def test_every_kd_method_resumes_to_the_same_weights(method, teacher_dir, tmp_path, monkeypatch):
    if KD_METHODS[method].needs_teacher:
        # teacher-side state that students share (HSAKD's branches) is cached in the teacher run by the first
        # student; make the cache exist before the two compared runs, so that both start alike
        _run(KDConfig, run_kd, _kd_overrides(method, teacher_dir, tmp_path / "warm", 2), method)
    straight = _run(KDConfig, run_kd, _kd_overrides(method, teacher_dir, tmp_path / "a", 2), method)
    resumed = _interrupted_then_resumed(
        KDConfig, run_kd, _kd_overrides(method, teacher_dir, tmp_path / "b", 2), method, monkeypatch
    )
    _same_weights(straight, resumed, _model_files(straight))


def _prune_overrides(method: str, source: Path, root: Path, epochs: int) -> list[str]:
    return [*PRUNE_TINY, *PRUNE_ONLY, f"method={method}", f"epochs={epochs}", f"model={source}", f"run_root={root}"]


@pytest.mark.parametrize("method", FILTER_METHODS.names())
def test_every_filter_method_runs_end_to_end(method, resnet_dir, tmp_path):
    run_dir = _run(PruneConfig, run_prune, _prune_overrides(method, resnet_dir, tmp_path, 1), method)
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["method"] == method and s["channels_removed"] > 0
    assert s["macs_after"] <= 0.6 * s["macs_before"]
    assert (run_dir / "checkpoints" / "model.pt").is_file()


@pytest.mark.parametrize("method", FILTER_METHODS.names())
def test_every_filter_method_resumes_to_the_same_weights(method, resnet_dir, tmp_path, monkeypatch):
    straight = _run(PruneConfig, run_prune, _prune_overrides(method, resnet_dir, tmp_path / "a", 2), method)
    resumed = _interrupted_then_resumed(
        PruneConfig, run_prune, _prune_overrides(method, resnet_dir, tmp_path / "b", 2), method, monkeypatch
    )
    _same_weights(straight, resumed, ["model.pt"])


def _sglp_overrides(rule: str, source: Path, root: Path, epochs: int) -> list[str]:
    return [*SGLP_TINY, f"baseline={rule}", f"finetune_epochs={epochs}", f"model={source}", f"run_root={root}"]


@pytest.mark.parametrize("rule", SGLP_RULES.names())
def test_every_sglp_rule_runs_end_to_end(rule, resnet_dir, tmp_path):
    run_dir = _run(SGLPConfig, run_sglp, _sglp_overrides(rule, resnet_dir, tmp_path, 1), rule)
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["baseline"] == rule and s["units_removed"] == s["units_before"] - round(0.5 * s["units_before"])
    assert s["macs_after"] < s["macs_before"]


@pytest.mark.parametrize("rule", SGLP_RULES.names())
def test_every_sglp_rule_resumes_to_the_same_weights(rule, resnet_dir, tmp_path, monkeypatch):
    straight = _run(SGLPConfig, run_sglp, _sglp_overrides(rule, resnet_dir, tmp_path / "a", 2), rule)
    resumed = _interrupted_then_resumed(
        SGLPConfig, run_sglp, _sglp_overrides(rule, resnet_dir, tmp_path / "b", 2), rule, monkeypatch
    )
    _same_weights(straight, resumed, ["model.pt"])


def test_registries_drive_the_cli_choices():
    import dataclasses

    choices = {f.name: f.metadata.get("choices") for f in dataclasses.fields(KDConfig)}
    assert choices["method"] == KD_METHODS.names()
    for _, entry in KD_METHODS.items():  # every method's section is a key of the command, with its defaults
        if entry.section:
            assert getattr(KDConfig(), entry.section) == entry.weights()
    prune_fields = {f.name: f for f in dataclasses.fields(PruneConfig)}
    assert prune_fields["method"].metadata["choices"] == FILTER_METHODS.names()
    for _, entry in FILTER_METHODS.items():
        for f in dataclasses.fields(entry.keys):
            assert f.name in prune_fields and getattr(PruneConfig(), f.name) == getattr(entry.keys(), f.name)
    assert {f.name: f for f in dataclasses.fields(SGLPConfig)}["baseline"].metadata["choices"] == SGLP_RULES.names()
