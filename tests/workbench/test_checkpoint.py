import pickle

import pytest
import torch

from workbench.checkpoint import load_checkpoint, save_checkpoint
from workbench.errors import WorkbenchError
from workbench.io import atomic_write_json


def test_roundtrip_with_tensors_and_rng(tmp_path):
    from workbench.seeding import rng_state, set_rng_state

    path = tmp_path / "c.pt"
    save_checkpoint(path, {"w": torch.arange(3.0), "rng": rng_state(), "step": 7})
    first = torch.rand(3)
    data = load_checkpoint(path)
    set_rng_state(data["rng"])
    assert torch.equal(torch.rand(3), first)
    assert data["step"] == 7 and torch.equal(data["w"], torch.arange(3.0))


def test_truncated_checkpoint_is_a_clear_error_and_not_overwritten(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"w": torch.randn(1000)})
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(WorkbenchError, match="truncated, corrupt or not a safe workbench checkpoint"):
        load_checkpoint(path)
    assert path.read_bytes() == blob[: len(blob) // 2]


def test_foreign_and_pickled_files_are_refused(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(WorkbenchError, match="not a workbench checkpoint"):
        load_checkpoint(foreign)

    class Evil:
        def __reduce__(self):
            return (print, ("executed!",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(WorkbenchError, match="not a safe workbench checkpoint"):
        load_checkpoint(evil)


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})
    assert path.read_text().strip().startswith("{") and '"a": 1' in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
