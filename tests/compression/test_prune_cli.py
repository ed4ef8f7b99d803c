"""``workbench compress sglp`` and ``workbench compress prune`` end to end on a small resnet and the digits data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SMALL = ["progress=false", "batch_size=64"]


def workbench_cli(*args: str) -> subprocess.CompletedProcess:
    """The ``workbench`` CLI in a subprocess, like the ``cli`` fixture but usable in module fixtures."""
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", *args],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "MPLBACKEND": "Agg"}, timeout=900,
    )  # fmt: skip


def _run_dir(stdout: str) -> Path:
    lines = [line for line in stdout.splitlines() if line.startswith("run directory: ")]
    assert lines, stdout
    return Path(lines[-1].split(": ", 1)[1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A resnet20 trained for 2 epochs on 600 digits images, and the run root."""
    root = tmp_path_factory.mktemp("prune") / "runs"
    res = workbench_cli(
        "train", "dataset=digits", "model=resnet20", "epochs=2", "subset=600", *SMALL, f"run_root={root}"
    )
    assert res.returncode == 0, res.stderr
    return _run_dir(res.stdout), root


def _summary(path: Path) -> dict:
    return json.loads((path / "summary.json").read_text())


def _eval_acc(run_dir: Path) -> float:
    res = workbench_cli("eval", f"model={run_dir}")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])["test_acc"]


def test_sglp_end_to_end(trained):
    import torch

    from compression.pruning.sglp import unit_macs
    from workbench.models.saved import load_model

    model_dir, root = trained
    res = workbench_cli(
        "compress", "sglp", f"model={model_dir}", "keep_units=0.5", "finetune_epochs=1", "subset=300",
        "val_subset=200", "importance_bn=train", "probe_samples=96", "probe_batch_size=48", "importance_batches=1",
        "importance_batch_size=32",
        *SMALL, f"run_root={root}",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = _run_dir(res.stdout)
    s = _summary(out)
    for key in (
        "units_before", "units_after", "segments", "kept_units", "macs_before", "macs_after", "params_before",
        "params_after", "acc_before", "acc_after_prune", "acc_after_finetune", "analysis_seconds",
    ):  # fmt: skip
        assert key in s, key
    assert (s["units_before"], s["units_after"]) == (7, 4)
    assert sum(len(seg) for seg in s["segments"]) == 7
    source, _ = load_model(model_dir / "checkpoints" / "model.pt")
    macs = unit_macs(source, s["removed_units"] + s["kept_units"], (1, 8, 8))
    assert s["macs_after"] == s["macs_before"] - sum(macs[u] for u in s["removed_units"])
    assert s["params_after"] < s["params_before"]
    pruned, spec = load_model(out / "checkpoints" / "model.pt")
    assert spec["removed_units"] == s["removed_units"]
    assert pruned(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert _eval_acc(out) == pytest.approx(s["acc_after_finetune"])
    assert (out / "plots" / "cka_segments.png").is_file()
    assert s["val_images"] == 200
    assert all(0 <= s[k] <= 100 for k in ("val_acc_before", "val_acc_after_prune", "val_acc"))


def test_validation_images_are_held_out_from_fine_tuning_and_from_the_source_training(trained):
    from compression.pipeline import load_data
    from compression.pruning.config import SGLPConfig
    from workbench.config import resolve_config
    from workbench.trained import load_trained as load_source

    model_dir, _ = trained
    source = load_source(model_dir)
    assert source.trained_on == (600, 0)
    cfg = resolve_config(SGLPConfig, [f"model={model_dir}", "subset=300", "val_subset=200"])
    data = load_data(cfg, source.spec, 0, source.trained_on)
    source_train = load_data(resolve_config(SGLPConfig, [f"model={model_dir}", "subset=600"]), source.spec, 0).plain

    def rows(ds):
        return {bytes(img.numpy()) for img in ds.images}

    assert len(data.val) == 200 and len(data.train) == 300
    assert not rows(data.val) & rows(data.train)
    assert not rows(data.val) & rows(source_train)
    assert rows(data.plain) == rows(data.train)


def test_sglp_baseline_meets_a_macs_target(trained):
    model_dir, root = trained
    res = workbench_cli(
        "compress", "sglp", f"model={model_dir}", "baseline=last", "target_macs=0.6", "finetune_epochs=0",
        *SMALL, f"run_root={root}",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    s = _summary(_run_dir(res.stdout))
    assert s["macs_after"] <= 0.6 * s["macs_before"]
    assert s["removed_units"] == ["layer1.2", "layer2.1", "layer2.2", "layer3.1", "layer3.2"][-s["units_removed"] :]
    assert s["acc_after_finetune"] == s["acc_after_prune"]


@pytest.mark.parametrize("method", ["sfp", pytest.param("cpmc", marks=pytest.mark.slow)])
def test_filter_pruning_end_to_end(trained, method):
    model_dir, root = trained
    res = workbench_cli(
        "compress", "prune", f"model={model_dir}", f"method={method}", "target_macs=0.5", "epochs=1",
        "subset=300", "speed_repeats=2", "speed_batch=32", *SMALL, f"run_root={root}",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = _run_dir(res.stdout)
    s = _summary(out)
    assert 0.4 < s["macs_ratio"] <= 0.5
    assert s["params_after"] < s["params_before"]
    assert s["cpu_speedup"] > 0 and s["cpu_images_per_s_after"] > 0
    if method == "sfp":
        assert s["max_abs_diff_masked_vs_pruned"] < 1e-4
        assert s["acc_masked"] == pytest.approx(s["acc_after"])
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert any("sfp/pruned_fraction" in m for m in metrics)
    assert _eval_acc(out) == pytest.approx(s["acc_after"])


def test_scope_all_prunes_the_residual_streams_end_to_end(trained):
    from workbench.models.saved import load_model

    model_dir, root = trained
    res = workbench_cli(
        "compress", "prune", f"model={model_dir}", "method=ghfp", "scope=all", "round_to=4", "target_macs=0.5",
        "epochs=1", "subset=300", "speed_repeats=2", "speed_batch=32", *SMALL, f"run_root={root}",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "ghfp@all" in res.stdout
    out = _run_dir(res.stdout)
    s = _summary(out)
    assert (s["scope"], s["round_to"]) == ("all", 4)
    assert 0.4 < s["macs_ratio"] <= 0.5
    assert s["coupled_layers"] > s["layers"]  # residual streams: several convs per group
    assert s["max_abs_diff_masked_vs_pruned"] < 1e-4
    pruned, _ = load_model(out / "checkpoints" / "model.pt")
    assert pruned.conv1.out_channels < 16 and pruned.conv1.out_channels % 4 == 0  # the stem's stream was pruned
    assert pruned.layer1[0].conv2.out_channels == pruned.conv1.out_channels
    assert _eval_acc(out) == pytest.approx(s["acc_after"])


def test_a_mask_method_can_fine_tune_the_pruned_model_and_one_shot_methods_train_as_long(trained):
    model_dir, root = trained
    summaries = {}
    for method in ("srfp", "pfgdf"):
        res = workbench_cli(
            "compress", "prune", f"model={model_dir}", f"method={method}", "target_macs=0.5", "epochs=1",
            "finetune_epochs=1", "subset=300", "speed_repeats=1", "speed_batch=16", *SMALL, f"run_root={root}",
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        out = _run_dir(res.stdout)
        summaries[method] = _summary(out)
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert len([m for m in metrics if "test/acc" in m]) == 2  # both methods train 2 epochs in all
        steps = [m["step"] for m in metrics if "test/acc" in m]
        assert steps == sorted(steps) and steps[0] < steps[1]
        assert _eval_acc(out) == pytest.approx(summaries[method]["acc_after"])
    srfp = summaries["srfp"]
    assert (srfp["epochs"], srfp["finetune_epochs"]) == (1, 1)
    assert srfp["acc_after"] != srfp["acc_after_prune"]  # the pruned model was trained further
    assert (Path(_run_dir(res.stdout)).parent.parent / "srfp").is_dir()


def test_compare_reports_validation_and_a_resumed_compare_reuses_finished_sub_runs(trained):
    model_dir, root = trained
    overrides = (
        "overrides=finetune_epochs=1,subset=300,val_subset=200,probe_samples=64,importance_batches=1,"
        "importance_batch_size=32,progress=false,batch_size=64"
    )
    res = workbench_cli(
        "compress", "compare", "protocol=sglp-fmnist", f"base_model={model_dir}", "seeds=0", "methods=sglp,random",
        overrides, f"run_root={root.parent / 'compare'}",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = _run_dir(res.stdout)
    report = (out / "report.md").read_text()
    assert "val. acc. (%)" in report and "| sglp | 1 |" in report and "| random | 1 |" in report
    s = _summary(out)
    assert set(s["table"]) == {"unpruned", "sglp", "random"} and "val_acc" in s["table"]["sglp"]
    subs = sorted((out / "runs").rglob("summary.json"))
    res = workbench_cli("compress", "compare", "--resume", str(out))
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("reusing") == 2
    assert sorted((out / "runs").rglob("summary.json")) == subs
    assert _summary(out)["table"] == s["table"]


def test_prune_compare_rows_at_both_scopes_with_a_joint_speed_up(trained):
    model_dir, root = trained
    res = workbench_cli(
        "compress", "compare", "protocol=prune-fmnist", f"base_model={model_dir}", "seeds=0",
        "methods=sfp,sfp@all,tp-l2@all", "overrides=epochs=1,finetune_epochs=0,subset=200,speed_repeats=1,"
        "speed_batch=8,speed_fold_bn=true,progress=false,batch_size=64,round_to=2",
        f"run_root={root.parent / 'compare-prune'}",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = _run_dir(res.stdout)
    report = (out / "report.md").read_text()
    for row in ("sfp@internal", "sfp@all", "tp-l2@all"):
        assert f"| {row} | 1 |" in report, report
    assert "CPU speed-up (joint)" in report
    s = _summary(out)
    assert s["table"]["sfp@all"]["cpu_speedup_joint"]["mean"] > 0
    assert set(s["goal_cpu_speedup_at_least_1.8_scope_all"]) == {"sfp@all", "tp-l2@all"}
    subs = [p.parent for p in (out / "runs").rglob("summary.json") if "compress" in str(p)]
    assert sorted({_summary(p)["scope"] for p in subs}) == ["all", "internal"]


def test_bad_input_is_refused_in_one_line(trained, tmp_path):
    model_dir, root = trained
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    cases = [
        (["compress", "prune", f"model={model_dir}", "method=magic"], "method"),
        (["compress", "prune", f"model={model_dir}", "target_macs=0.01"], "cannot be reached"),
        (["compress", "sglp", f"model={model_dir}", "target_macs=0.01"], "cannot be reached"),
        (["compress", "sglp", f"model={tmp_path / 'missing'}"], "does not exist"),
        (["compress", "sglp", f"model={empty}"], "not a finished train run"),
        (["compress", "sglp", f"model={model_dir}", "epochs=3"], "finetune_epochs"),
        (["compress", "sglp", f"model={model_dir}", "val_subset=5000"], "val_subset"),
        (["compress", "prune", f"model={model_dir}", "finetune_epochs=-1"], "finetune_epochs"),
        (["compress", "prune", f"model={model_dir}", "scope=all", "target_macs=0.001"], "(scope=all)"),
        (["compress", "prune", f"model={model_dir}", "method=tp-magic"], "tp-magic"),
        (["compress", "prune", f"model={model_dir}", "scope=some"], "scope"),
        (["compress", "prune", f"model={model_dir}", "round_to=0"], "round_to"),
    ]
    for args, needle in cases:
        res = workbench_cli(*args, f"run_root={root}")
        assert res.returncode == 2, (args, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (args, res.stderr)
    assert not (root / "compress" / "magic").exists() and not (root / "compress" / "tp-magic").exists()
    leftover = [p for p in (root / "compress").rglob("summary.json")]
    assert all(_summary(p.parent)["macs_after"] for p in leftover)  # no half-written run was left behind


@pytest.mark.slow
def test_a_model_without_residual_units_is_refused(tmp_path):
    root = tmp_path / "runs"
    res = workbench_cli("train", "dataset=digits", "model=mlp", "epochs=1", "subset=100", *SMALL, f"run_root={root}")
    assert res.returncode == 0, res.stderr
    res = workbench_cli("compress", "sglp", f"model={_run_dir(res.stdout)}", f"run_root={root}")
    assert res.returncode == 2 and "no prunable residual units" in res.stderr
    assert not (root / "compress").exists() or not any((root / "compress").rglob("config.yaml"))
