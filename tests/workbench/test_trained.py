"""Reading a finished run back (``workbench.trained``): the model file, the model with its spec and run, and
the one-line refusals."""

from __future__ import annotations

import json

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.models import build_model
from workbench.models.saved import save_model
from workbench.trained import MODEL_FILE, load_trained, model_file, train_run_model_file


def _run_dir(tmp_path, command="train", subset=50):
    run = tmp_path / "run"
    model = build_model("small_cnn", num_classes=3, in_channels=1, widths=[2, 4, 8])
    spec = {"name": "small_cnn", "num_classes": 3, "in_channels": 1, "input_shape": [1, 8, 8], "dataset": "digits",
            "model_kwargs": {"widths": [2, 4, 8]}}  # fmt: skip
    save_model(run / MODEL_FILE, model, spec)
    (run / "summary.json").write_text(json.dumps({"command": command, "epochs": 2}))
    (run / "config.yaml").write_text(f"subset: {subset}\nseed: 7\n")
    return run, model


def test_a_run_directory_loads_with_its_spec_summary_and_train_config(tmp_path):
    run, model = _run_dir(tmp_path)
    assert model_file(run) == run / MODEL_FILE and model_file(run / MODEL_FILE) == run / MODEL_FILE
    trained = load_trained(run)
    assert trained.input_shape == (1, 8, 8) and trained.run_summary["epochs"] == 2
    assert trained.trained_on == (50, 7)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(trained.model.eval()(x), model.eval()(x))
    assert train_run_model_file(run) == run / MODEL_FILE


def test_another_commands_run_is_no_teacher_and_has_no_train_config(tmp_path):
    run, _ = _run_dir(tmp_path, command="compress prune")
    assert load_trained(run).trained_on is None  # its config is not a train config
    with pytest.raises(WorkbenchError, match="not a `workbench train` run"):
        train_run_model_file(run)


@pytest.mark.parametrize(
    ("make", "needle"),
    [(lambda p: p / "missing", "does not exist"), (lambda p: p, "not a finished train run"), (lambda p: "", "missing")],
)
def test_bad_paths_are_refused_in_one_line(tmp_path, make, needle):
    with pytest.raises(WorkbenchError, match=needle) as err:
        model_file(make(tmp_path))
    assert "\n" not in str(err.value)
    with pytest.raises(WorkbenchError, match="teacher"):
        train_run_model_file(tmp_path / "missing")
