"""A refused ``--resume`` changes nothing (validated first, a failed attempt rolled back), each command declares
which keys may change on resume, and a run directory is recognised by what it records, wherever it lies."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from workbench.checkpoint import save_checkpoint
from workbench.cli import main, run_command
from workbench.commands import CORE_COMMANDS
from workbench.errors import WorkbenchError
from workbench.runs import SNAPSHOT_DIR, Run, open_run, read_run_info, run_kind

BASE = ["dataset=digits", "model=mlp", "batch_size=64", "lr=0.1", "progress=false", "schedule=none", "subset=256"]
TRAIN = next(c for c in CORE_COMMANDS if c.name == "train")


def manifest(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: its md5 and mtime (ns); folders too."""
    out = {}
    for here, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(Path(here, d), root) + "/"] = ("dir", 0)
        for f in files:
            path = Path(here, f)
            out[os.path.relpath(path, root)] = (hashlib.md5(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    return out


@pytest.fixture
def trained(tmp_path, capsys) -> Path:
    """A finished one-epoch train run."""
    assert main(["train", *BASE, "epochs=1", f"run_root={tmp_path / 'runs'}"]) == 0
    capsys.readouterr()
    (run,) = [p.parent for p in (tmp_path / "runs").rglob("config.yaml")]
    return run


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    "change", ["model=small_cnn", "dataset=fashion-mnist", "batch_size=32", "lr=0.5", "subset=128", "seed=3"]
)
def test_resume_refuses_keys_the_command_does_not_declare_and_writes_nothing(trained, capsys, change):
    before = manifest(trained)
    assert main(["train", "--resume", str(trained), "epochs=2", change]) == 2
    err = one_line_error(capsys)
    assert f"--resume cannot change {change.split('=')[0]}" in err and "epochs" in err
    assert manifest(trained) == before


def test_a_resume_that_fails_after_writing_is_rolled_back_then_a_good_resume_works(trained, capsys):
    """The checkpoint has the right format marker but the wrong content: the trainer refuses it after the new
    config was written; the run comes back byte for byte, and resuming after a repair continues it."""
    ckpt = trained / "checkpoints" / "last.pt"
    good = ckpt.read_bytes()
    save_checkpoint(ckpt, {"model": {"nonsense": 1}})
    (trained / "checkpoints" / ".last.pt.x1y2.tmp").write_bytes(b"left by a killed process")
    before = manifest(trained)
    assert main(["train", "--resume", str(trained), "epochs=2"]) == 2
    assert "does not match" in one_line_error(capsys)
    assert manifest(trained) == before
    assert not (trained / SNAPSHOT_DIR).exists()

    ckpt.write_bytes(good)
    assert main(["train", "--resume", str(trained), "epochs=2"]) == 0
    assert yaml.safe_load((trained / "config.yaml").read_text())["epochs"] == 2
    assert json.loads((trained / "summary.json").read_text())["epochs"] == 2
    assert not (trained / "checkpoints" / ".last.pt.x1y2.tmp").exists()  # the orphan went once resumed
    assert not (trained / SNAPSHOT_DIR).exists()


def test_snapshot_rollback_restores_appends_replacements_new_and_deleted_files(tmp_path):
    root = tmp_path / "run"
    (root / "checkpoints").mkdir(parents=True)
    (root / "metrics.jsonl").write_text('{"step": 1}\n')
    (root / "config.yaml").write_text("epochs: 1\n")
    (root / "checkpoints" / "big.pt").write_bytes(os.urandom(1024))
    (root / "gone.txt").write_text("keep me")
    before = manifest(root)
    run = Run(dir=root, group="train", resumed=True)
    run.begin_resume()
    with open(root / "metrics.jsonl", "a") as f:
        f.write('{"step": 2}\n')
    (root / "config.yaml").write_text("epochs: 9\n")
    tmp = root / "checkpoints" / "new.tmp"
    tmp.write_bytes(b"new")
    os.replace(tmp, root / "checkpoints" / "big.pt")
    (root / "gone.txt").unlink()
    (root / "plots" / "deep").mkdir(parents=True)
    (root / "plots" / "deep" / "x.png").write_bytes(b"png")
    run.rollback()
    assert manifest(root) == before


def test_snapshot_rollback_keeps_large_files_as_links(tmp_path, monkeypatch):
    import workbench.runs as runs

    monkeypatch.setattr(runs, "SNAPSHOT_COPY_BYTES", 10)
    root = tmp_path / "run"
    root.mkdir()
    (root / "metrics.jsonl").write_text('{"step": 1}\n' * 3)
    (root / "last.pt").write_bytes(b"x" * 100)
    before = manifest(root)
    run = Run(dir=root, group="train", resumed=True)
    run.begin_resume()
    with open(root / "metrics.jsonl", "a") as f:  # appended in place, same inode as the snapshot's link
        f.write('{"step": 2}\n')
    (root / "new.pt").write_bytes(b"y")
    os.replace(root / "new.pt", root / "last.pt")
    run.rollback()
    assert manifest(root) == before


def test_a_command_that_declares_nothing_still_resumes_and_names_the_changes(trained, capsys):
    lax = dataclasses.replace(TRAIN, resume_keys=None)
    assert (
        run_command(lax, ["--resume", str(trained), "epochs=2", "eval_batch_size=64"], "workbench train", "train") == 0
    )
    assert "note: --resume changes epochs, eval_batch_size" in capsys.readouterr().err
    before = manifest(trained)
    args = ["--resume", str(trained), "epochs=3", "model=small_cnn"]  # a key that names the run: never
    with pytest.raises(WorkbenchError, match=r"--resume cannot change model .*may change: any key but dataset, model"):
        run_command(lax, args, "workbench train", "train")
    assert manifest(trained) == before


def test_resume_with_a_preset_is_refused(trained, capsys):
    before = manifest(trained)
    assert main(["train", "--resume", str(trained), "--preset", "demo"]) == 2
    assert "--preset cannot be combined with --resume" in one_line_error(capsys)
    assert manifest(trained) == before


def test_the_run_records_its_kind_and_a_moved_run_resumes_evaluates_and_reports(trained, tmp_path, capsys):
    assert read_run_info(trained)["group"] == "train" and run_kind(trained) == "train"
    moved = tmp_path / "laptop" / "my-run"
    moved.parent.mkdir()
    shutil.move(trained, moved)
    assert main(["train", "--resume", str(moved), "epochs=2"]) == 0
    out = capsys.readouterr().out
    assert f"run directory: {moved}" in out and f"tensorboard --logdir {moved}" in out
    assert json.loads((moved / "summary.json").read_text())["epochs"] == 2
    assert main(["eval", f"model={moved}"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["dataset"] == "digits"
    assert main(["report", str(moved), f"out={tmp_path / 'rep'}"]) == 0
    assert "digits" in (tmp_path / "rep" / "report.md").read_text()


def test_a_run_of_another_command_is_refused_by_what_it_records_not_its_path(trained, tmp_path, capsys):
    info = json.loads((trained / "run.json").read_text())
    (trained / "run.json").write_text(json.dumps({**info, "group": "compress", "command": "kd"}))
    before = manifest(trained)
    assert main(["train", "--resume", str(trained), "epochs=2"]) == 2
    err = one_line_error(capsys)
    assert "is a 'compress kd' run, not a 'train' run" in err and "workbench compress kd --resume" in err
    assert manifest(trained) == before
    with pytest.raises(WorkbenchError, match="'compress kd' run, not a 'compress prune' run"):
        open_run(trained, "compress", "prune")
    run, _ = open_run(trained, "compress", "kd")
    assert run.kind == "compress kd"


@pytest.mark.parametrize(
    "payload",
    [{"spec": {"name": "mlp"}}, {"spec": {"name": "mlp", "num_classes": 10, "in_channels": 1}, "state_dict": {"x": 1}}],
)
def test_eval_of_a_model_file_with_the_right_marker_but_wrong_content_is_one_line(tmp_path, capsys, payload):
    from workbench.checkpoint import MODEL_FORMAT

    path = save_checkpoint(tmp_path / "model.pt", payload, fmt=MODEL_FORMAT)
    assert main(["eval", f"model={path}"]) == 2
    assert "is damaged or does not fit its model" in one_line_error(capsys)


def _commands_with_name_keys():
    from workbench.cli import _core_commands, _groups, load_object

    found = [(f"workbench {c.name}", c) for c in _core_commands()[0]]
    for group, spec in sorted(_groups().items()):
        found += [(f"workbench {group} {c.name}", c) for c in load_object(spec).commands]
    return [(p, c) for p, c in found if c.creates_run and c.name_keys]


@pytest.mark.parametrize("prog, cmd", _commands_with_name_keys(), ids=[p for p, _ in _commands_with_name_keys()])
def test_every_command_refuses_a_resume_that_changes_what_names_the_run(prog, cmd):
    """Declared or not, a key that names the run (method, model, env, benchmark...) never changes on resume,
    e.g. `compress prune --resume RUN method=X` no longer writes X's files into another method's run."""
    from omegaconf import OmegaConf

    from workbench.cli import _check_resume_changes, load_object

    schema = load_object(cmd.config)
    saved = OmegaConf.to_object(OmegaConf.structured(schema))
    new = OmegaConf.to_object(OmegaConf.structured(schema))
    key = cmd.name_keys[0]
    field = next(f for f in dataclasses.fields(schema) if f.name == key)
    choices = [c for c in (field.metadata.get("choices") or ()) if c != getattr(saved, key)]
    setattr(new, key, choices[0] if choices else "something-else")
    with pytest.raises(WorkbenchError, match=f"--resume cannot change {key} "):
        _check_resume_changes(cmd, prog, saved, new)


def test_a_sub_run_created_inside_a_resumed_run_commits_it(tmp_path):
    """A resumed compare that has started its next sub-run has done work: a later failure keeps it."""
    from workbench.config import CommonConfig
    from workbench.runs import create_run

    outer = tmp_path / "compare"
    outer.mkdir()
    (outer / "config.yaml").write_text("seed: 0\n")
    run = Run(dir=outer, group="compare", resumed=True)
    run.begin_resume()
    sub = create_run("train", CommonConfig(run_root=str(outer / "runs")), "x")
    assert run._snapshot is None and not (outer / SNAPSHOT_DIR).exists()
    run.rollback()
    assert (sub.dir / "run.json").is_file()
