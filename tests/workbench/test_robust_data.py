"""Pickled dataset files are read without executing code: a poisoned CIFAR batch whose payload would create a
marker file is refused in one line by loading, by ``data prepare`` and by ``train``, and the marker never
appears; a batch with the right format but the wrong content is refused too."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from workbench.cli import main
from workbench.data import get_dataset
from workbench.data.cifar import SafeUnpickler, safe_load
from workbench.errors import WorkbenchError


class Payload:
    """Unpickling this object calls ``open(marker, "w")``: the file appears if the pickle is executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def write_cifar10(root: Path, per_file: int = 4, bytes_keys: bool = False) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def key(k: str):
        return k.encode() if bytes_keys else k

    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {key("data"): rng.integers(0, 256, (per_file, 3072), dtype=np.uint8), key("labels"): [1, 2, 3, 9]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    meta = {key("label_names"): [f"c{i}".encode() if bytes_keys else f"c{i}" for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def test_a_clean_copy_loads_and_prepare_reports_it(tmp_path, capsys):
    write_cifar10(tmp_path, bytes_keys=True)
    train = get_dataset("cifar10", "train", data_root=tmp_path, augment=False)
    assert len(train) == 20 and train.classes[9] == "c9" and train.targets[:4].tolist() == [1, 2, 3, 9]
    assert main(["data", "prepare", "cifar10", f"data_root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "cifar10: ready at" in out and "20 train / 4 test images" in out and "not byte-identical" in out


@pytest.mark.parametrize("where", ["data_batch_3", "batches.meta", "test_batch"])
def test_a_poisoned_batch_never_runs_its_payload(tmp_path, capsys, where):
    marker = tmp_path / "pwned"
    folder = write_cifar10(tmp_path / "data")
    entry = {"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 3], "x": Payload(marker)}
    (folder / where).write_bytes(pickle.dumps(entry, protocol=2))

    assert main(["data", "prepare", "cifar10", f"data_root={tmp_path / 'data'}"]) == 2
    err = capsys.readouterr()
    assert "ready" not in err.out
    lines = err.err.strip().splitlines()
    assert len(lines) == 1 and "damaged" in lines[0]
    assert "refused global io.open: not part of this dataset format" in lines[0]
    with pytest.raises(WorkbenchError, match="refused global"):
        get_dataset("cifar10", "test" if where == "test_batch" else "train", data_root=tmp_path / "data")
    runs = tmp_path / "runs"
    status = main(["train", "dataset=cifar10", "model=small_cnn", f"data_root={tmp_path / 'data'}", f"run_root={runs}"])
    assert status == 2 and not runs.exists()
    assert not marker.exists()


def test_the_unpickler_admits_only_numpy_arrays(tmp_path):
    import os

    with open(os.devnull, "rb") as f:
        unpickler = SafeUnpickler(f)
        for evil in (os.system, eval, __import__, getattr):
            with pytest.raises(pickle.UnpicklingError, match="refused global"):
                unpickler.find_class(evil.__module__ or "builtins", evil.__name__)
    path = tmp_path / "ok"
    path.write_bytes(pickle.dumps({"a": np.arange(3, dtype=np.uint8), "b": b"x"}, protocol=2))
    loaded = safe_load(path)
    assert loaded["a"].tolist() == [0, 1, 2] and loaded["b"] == b"x"


@pytest.mark.parametrize(
    "entry, needle",
    [
        ({"data": np.zeros((4, 3072), np.float32), "labels": [0, 1, 2, 3]}, "uint8 array"),
        ({"data": np.zeros((4, 100), np.uint8), "labels": [0, 1, 2, 3]}, "rows of 3072"),
        ({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2]}, "one label per row"),
        ({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 10]}, "labels outside 0..9"),
        ({"data": np.zeros((4, 3072), np.uint8), "labels": ["a", 1, 2, 3]}, "must hold integers"),
        ([1, 2, 3], "not a dict"),
    ],
)
def test_right_format_wrong_content_is_one_line(tmp_path, capsys, entry, needle):
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_1").write_bytes(pickle.dumps(entry, protocol=2))
    assert main(["data", "prepare", "cifar10", f"data_root={tmp_path}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines


def test_a_truncated_batch_is_one_line(tmp_path, capsys):
    folder = write_cifar10(tmp_path)
    data = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(data[: len(data) // 2])
    assert main(["data", "prepare", "cifar10", f"data_root={tmp_path}"]) == 2
    assert "cannot read" in capsys.readouterr().err
