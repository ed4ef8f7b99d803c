import json
from pathlib import Path

import pytest
import yaml

BASE = ["dataset=digits", "model=mlp", "epochs=2", "batch_size=64", "lr=0.1", "progress=false"]


def run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("config.yaml"))


def test_unknown_key_and_bad_type_exit_2_and_write_nothing(cli, run_root):
    for arg, needle in (
        ("epoch=3", "unknown config key 'epoch' (did you mean 'epochs'?)"),
        ("epochs=three", "bad value for 'epochs'"),
        ("optimizer=sgdd", "valid: sgd, adam, adamw"),
    ):
        res = cli("train", *BASE, arg, f"run_root={run_root}")
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0]
    assert not run_root.exists()


def test_missing_dataset_is_one_line_and_leaves_no_run_dir(cli, run_root, tmp_path):
    res = cli("train", "dataset=cifar10", "model=resnet20", f"data_root={tmp_path / 'empty'}", f"run_root={run_root}")
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1
    assert "data_root" in res.stderr and "WORKBENCH_DATA" in res.stderr and "download=true" in res.stderr
    assert run_dirs(run_root) == []


def test_train_writes_the_full_run_directory_and_eval_reloads_it(cli, run_root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = cli("train", *BASE, "seed=3", "name=digits-mlp", f"run_root={run_root}")
    assert res.returncode == 0, res.stderr
    (run,) = run_dirs(run_root)
    assert run.parent == run_root / "train" / "digits-mlp" and run.name.endswith("-s3")
    assert f"run directory: {run}" in res.stdout
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "checkpoints/last.pt",
        "checkpoints/model.pt",
        "plots/learning_curve.png",
    ):
        assert (run / name).is_file(), name
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["seed"] == 3 and cfg["epochs"] == 2 and cfg["dataset"] == "digits"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_acc"] > 50 and summary["macs"] > 0 and summary["params"] > 0
    acc = EventAccumulator(str(run)).Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/acc", "test/acc", "lr", "throughput/images_per_s"} <= tags
    assert [e.step for e in acc.Scalars("test/acc")] == [23, 46]

    res = cli("eval", f"model={run}")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["test_acc"] == pytest.approx(summary["test_acc"])


def test_resume_extends_a_run_and_continues_its_curves(cli, run_root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert cli("train", *BASE, "epochs=1", "schedule=none", f"run_root={run_root}").returncode == 0
    (run,) = run_dirs(run_root)
    res = cli("train", "--resume", str(run), "epochs=2")
    assert res.returncode == 0, res.stderr
    assert run_dirs(run_root) == [run]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 46
    acc = EventAccumulator(str(run)).Reload()
    assert [e.step for e in acc.Scalars("test/acc")] == [23, 46]
    assert json.loads((run / "summary.json").read_text())["epochs"] == 2


def test_resume_of_a_foreign_folder_or_corrupt_checkpoint(cli, run_root, tmp_path):
    res = cli("train", "--resume", str(tmp_path))
    assert res.returncode == 2 and "not a run directory" in res.stderr
    assert cli("train", *BASE, "epochs=1", f"run_root={run_root}").returncode == 0
    (run,) = run_dirs(run_root)
    ckpt = run / "checkpoints" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    res = cli("train", "--resume", str(run), "epochs=2")
    assert res.returncode == 2 and "truncated, corrupt" in res.stderr
    assert len(ckpt.read_bytes()) == 100


def test_report_groups_seeds(cli, run_root, tmp_path):
    for seed in (0, 1):
        assert cli("train", *BASE, "epochs=1", f"seed={seed}", f"run_root={run_root}").returncode == 0
    res = cli("report", str(run_root), f"out={tmp_path / 'rep'}")
    assert res.returncode == 0, res.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    header, _, row = md.strip().splitlines()
    assert "test_acc" in header and "| 2 |" in row and "±" in row
    assert (tmp_path / "rep" / "report.csv").is_file()


def test_help_lists_keys_and_unknown_command_suggests(cli):
    res = cli("train", "--help")
    assert res.returncode == 0 and "batch_size" in res.stdout and "fmnist-resnet20" in res.stdout
    res = cli("trian")
    assert res.returncode == 2 and "did you mean 'train'" in res.stderr


@pytest.mark.parametrize("command", ["train", "rl"])
def test_sigterm_saves_a_checkpoint_and_exits_130(run_root, command):
    """A scheduler's SIGTERM stops a run like Ctrl-C: checkpoint saved, resume hint printed, exit 130."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[2]
    if command == "train":
        args = ["train", *BASE, "epochs=1000", "log_every=1"]
    else:
        args = ["rl", "train", "env=CartPole-v1", "method=independent", "students=2", "total_steps=10000000"]
        args += ["checkpoint_every=0", "eval_episodes=0", "progress=false", "log_every=64", "threads=1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", *args, f"run_root={run_root}"],
        cwd=root,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not any(run_root.rglob("metrics.jsonl")):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err
    (run,) = run_dirs(run_root)
    assert (run / "checkpoints" / "last.pt").is_file()
