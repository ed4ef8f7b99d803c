"""workbench.data: every loader reads small files written here in the real on-disk formats."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from workbench.data import (
    DATASETS,
    TensorImageDataset,
    get_dataset,
    prepare,
    resolve_data_root,
    stratified_indices,
)
from workbench.data import fashion_mnist as fmnist_module
from workbench.errors import WorkbenchError

# ---------------------------------------------------------------- writers of the real formats


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """IDX3: big-endian magic 2051, count, rows, cols, then uint8 pixels row-major."""
    n, h, w = images.shape
    path.write_bytes(struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """IDX1: big-endian magic 2049, count, then one uint8 label each."""
    path.write_bytes(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def gzip_file(path: Path) -> Path:
    gz = path.with_name(path.name + ".gz")
    gz.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    return gz


def fake_fmnist(system_dir: Path, n_train: int = 20, n_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """The four gzipped IDX files, as Debian's dataset-fashion-mnist installs them."""
    rng = np.random.default_rng(seed)
    system_dir.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        write_idx_images(system_dir / f"{prefix}-images-idx3-ubyte", images)
        write_idx_labels(system_dir / f"{prefix}-labels-idx1-ubyte", labels)
        gzip_file(system_dir / f"{prefix}-images-idx3-ubyte")
        gzip_file(system_dir / f"{prefix}-labels-idx1-ubyte")
        arrays[prefix] = (images, labels)
    return arrays


def dump_pickle(path: Path, obj: object) -> None:
    # The real batches are Python 2 pickles whose str keys torchvision reads back with
    # encoding="latin1" as str keys ("data", "labels"), so str keys here mirror them.
    path.write_bytes(pickle.dumps(obj, protocol=2))


def fake_cifar(root: Path, hundred: bool, per_file: int = 6, seed: int = 0) -> dict[str, tuple]:
    """CIFAR python batches: rows of 3072 uint8 (1024 R, 1024 G, 1024 B, each 32x32 row-major)."""
    rng = np.random.default_rng(seed)
    num_classes = 100 if hundred else 10
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    files = (
        {"train": ["train"], "test": ["test"]}
        if hundred
        else {
            "train": [f"data_batch_{i}" for i in range(1, 6)],
            "test": ["test_batch"],
        }
    )
    out = {}
    for split, names in files.items():
        all_rows, all_labels = [], []
        for name in names:
            rows = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
            labels = [int(x) for x in rng.integers(0, num_classes, per_file)]
            key = "fine_labels" if hundred else "labels"
            entry = {"data": rows, key: labels, "batch_label": name}
            if hundred:
                entry["coarse_labels"] = [x // 5 for x in labels]
            dump_pickle(folder / name, entry)
            all_rows.append(rows)
            all_labels += labels
        out[split] = (np.concatenate(all_rows).reshape(-1, 3, 32, 32), all_labels)
    if hundred:
        dump_pickle(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": []})
    else:
        dump_pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072})
    return out


COLOURS = [(250, 10, 10), (10, 250, 10), (10, 10, 250)]


def fake_imagenet_subset(root: Path) -> None:
    """ImageFolder tree of solid-colour PNGs: class k is colour k; val lacks class 'c0'."""
    for split, per_class in (("train", 3), ("val", 2)):
        for k, colour in enumerate(COLOURS):
            if split == "val" and k == 0:
                continue
            d = root / "imagenet-subset" / split / f"c{k}"
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (40, 30), colour).save(d / f"img{i}.png")


def fake_tiny_imagenet(root: Path) -> list[str]:
    """tiny-imagenet-200 tree with 3 wnids; one train image is greyscale, as some real ones are."""
    base = root / "tiny-imagenet-200"
    wnids = ["n02", "n01", "n03"]  # wnids.txt is not sorted in the real file either
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for wnid in wnids:
        colour = COLOURS[sorted(wnids).index(wnid)]
        images = base / "train" / wnid / "images"
        images.mkdir(parents=True)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
        for i in range(2):
            Image.new("RGB", (64, 64), colour).save(images / f"{wnid}_{i}.JPEG", quality=95)
    Image.new("L", (64, 64), 128).save(base / "train" / "n01" / "images" / "n01_grey.JPEG")
    lines = []
    for i, wnid in enumerate(["n03", "n01", "n02", "n03"]):
        colour = COLOURS[sorted(wnids).index(wnid)]
        Image.new("RGB", (64, 64), colour).save(base / "val" / "images" / f"val_{i}.JPEG", quality=95)
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return sorted(wnids)


def normalised(images: torch.Tensor, name: str, max_value: float = 255.0) -> torch.Tensor:
    info = DATASETS[name]
    mean = torch.tensor(info.mean).view(-1, 1, 1)
    std = torch.tensor(info.std).view(-1, 1, 1)
    return (images.float() / max_value - mean) / std


# ---------------------------------------------------------------- data root


def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WORKBENCH_DATA", raising=False)
    assert resolve_data_root(None) == tmp_path / "home" / ".cache" / "workbench"
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "env"))
    assert resolve_data_root(None) == tmp_path / "env"
    assert resolve_data_root(str(tmp_path / "arg")) == tmp_path / "arg"
    assert resolve_data_root("~/x") == tmp_path / "home" / "x"


def test_get_dataset_uses_env_root(monkeypatch, tmp_path):
    fake_cifar(tmp_path / "env", hundred=False)
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "env"))
    assert len(get_dataset("cifar10", "test")) == 6
    with pytest.raises(WorkbenchError):
        get_dataset("cifar10", "test", data_root=tmp_path / "empty")


# ---------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_unpacks_system_copy_and_reads(monkeypatch, tmp_path):
    arrays = fake_fmnist(tmp_path / "system")
    monkeypatch.setattr(fmnist_module, "SYSTEM_COPY", tmp_path / "system")
    root = tmp_path / "root"
    train = get_dataset("fashion-mnist", "train", data_root=root, augment=False)
    raw = root / "FashionMNIST" / "raw"
    for name in fmnist_module.FILES:
        assert (raw / name).is_file()
    assert not list(raw.glob(".*")), "no temporary files left behind"
    images, labels = arrays["train"]
    assert len(train) == 20 and train.images.shape == (20, 1, 28, 28)
    assert train.targets.tolist() == labels.tolist()
    assert train.info is DATASETS["fashion-mnist"] and train.classes[9] == "Ankle boot"
    x, y = train[3]
    assert x.dtype == torch.float32 and x.shape == (1, 28, 28) and y == 3 and isinstance(y, int)
    torch.testing.assert_close(x, normalised(torch.from_numpy(images[3])[None], "fashion-mnist"))
    test = get_dataset("fashion-mnist", "test", data_root=root)
    assert len(test) == 10 and test.targets.tolist() == arrays["t10k"][1].tolist()


def test_fashion_mnist_prepare_uses_gz_in_raw_first(monkeypatch, tmp_path):
    root = tmp_path / "root"
    arrays = fake_fmnist(root / "FashionMNIST" / "raw", seed=1)
    fake_fmnist(tmp_path / "system", seed=2)
    monkeypatch.setattr(fmnist_module, "SYSTEM_COPY", tmp_path / "system")
    assert prepare("fashion-mnist", data_root=root) == root / "FashionMNIST" / "raw"
    ds = get_dataset("fashion-mnist", "test", data_root=root)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(arrays["t10k"][0]))


def test_fashion_mnist_missing_everywhere(monkeypatch, tmp_path):
    monkeypatch.setattr(fmnist_module, "SYSTEM_COPY", tmp_path / "no-system-copy")
    with pytest.raises(WorkbenchError) as err:
        get_dataset("fashion-mnist", data_root=tmp_path)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message and "FashionMNIST/raw" in message
    assert "dataset-fashion-mnist" in message


def test_fashion_mnist_train_augmentation_is_padded_crop_without_flip(monkeypatch, tmp_path):
    fake_fmnist(tmp_path / "system")
    monkeypatch.setattr(fmnist_module, "SYSTEM_COPY", tmp_path / "system")
    ds = get_dataset("fashion-mnist", "train", data_root=tmp_path / "root")
    padded = torch.nn.functional.pad(ds.images[0].float(), (2, 2, 2, 2))
    windows = {(dy, dx): padded[:, dy : dy + 28, dx : dx + 28] for dy in range(5) for dx in range(5)}
    torch.manual_seed(0)
    seen = set()
    for _ in range(60):
        raw = ds[0][0] * DATASETS["fashion-mnist"].std[0] + DATASETS["fashion-mnist"].mean[0]
        raw = (raw * 255).round()
        match = [k for k, w in windows.items() if torch.equal(w, raw)]
        assert match, "every augmented image is one of the 25 shifted windows, never mirrored"
        seen.add(match[0])
    assert len(seen) > 5


# ---------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_reads_python_batches(tmp_path, hundred):
    name = "cifar100" if hundred else "cifar10"
    arrays = fake_cifar(tmp_path, hundred)
    train = get_dataset(name, "train", data_root=tmp_path, augment=False)
    test = get_dataset(name, "test", data_root=tmp_path)
    images, labels = arrays["train"]
    assert len(train) == len(labels) == (6 if hundred else 30) and len(test) == 6
    assert train.targets.dtype == torch.int64 and train.targets.tolist() == labels
    assert test.targets.tolist() == arrays["test"][1]
    assert torch.equal(train.images, torch.from_numpy(images))
    x, y = test[2]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == arrays["test"][1][2]
    torch.testing.assert_close(x, normalised(torch.from_numpy(arrays["test"][0][2]), name))
    assert train.classes[1] == ("f1" if hundred else "c1") and train.info.num_classes == (100 if hundred else 10)


def test_cifar_augments_only_train(tmp_path):
    fake_cifar(tmp_path, hundred=False)
    plain = get_dataset("cifar10", "test", data_root=tmp_path, augment=True)
    assert not plain.augments
    assert torch.equal(plain[0][0], plain[0][0])
    train = get_dataset("cifar10", "train", data_root=tmp_path, augment=True)
    assert train.augments
    padded = torch.nn.functional.pad(train.images[0].float(), (4, 4, 4, 4))
    windows = [padded[:, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
    candidates = windows + [w.flip(-1) for w in windows]
    mean = torch.tensor(DATASETS["cifar10"].mean).view(3, 1, 1)
    std = torch.tensor(DATASETS["cifar10"].std).view(3, 1, 1)
    torch.manual_seed(0)
    kinds = []
    for _ in range(40):
        raw = ((train[0][0] * std + mean) * 255).round()
        match = [i for i, c in enumerate(candidates) if torch.equal(raw, c)]
        assert match, "every augmented image is a shifted window of the zero-padded image, maybe mirrored"
        kinds.append(match[0])
    assert len(set(kinds)) > 10
    assert any(k < 81 for k in kinds) and any(k >= 81 for k in kinds), "both plain and mirrored crops occur"
    no_aug = get_dataset("cifar10", "train", data_root=tmp_path, augment=False)
    assert not no_aug.augments and torch.equal(no_aug[0][0], no_aug[0][0])


def test_cifar_batched_fetch_matches_items(tmp_path):
    fake_cifar(tmp_path, hundred=False)
    ds = get_dataset("cifar10", "test", data_root=tmp_path)
    xs, ys = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    assert xs.shape == (4, 3, 32, 32) and ys.tolist() == ds.targets[:4].tolist()
    torch.testing.assert_close(xs, torch.stack([ds[i][0] for i in range(4)]))


def test_cifar_missing_names_every_way(tmp_path):
    with pytest.raises(WorkbenchError) as err:
        get_dataset("cifar100", data_root=tmp_path)
    message = str(err.value)
    assert "\n" not in message
    for part in (str(tmp_path), "cifar-100-python/", "data_root", "WORKBENCH_DATA", "download=true"):
        assert part in message


def test_cifar_damaged_batch(tmp_path):
    fake_cifar(tmp_path, hundred=True)
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"\x80\x02}q\x00(X")
    with pytest.raises(WorkbenchError, match="cannot read"):
        get_dataset("cifar100", data_root=tmp_path)


# ---------------------------------------------------------------- folder datasets


def test_imagenet_subset_image_folder(tmp_path):
    fake_imagenet_subset(tmp_path)
    train = get_dataset("imagenet-subset", "train", data_root=tmp_path, augment=True)
    test = get_dataset("imagenet-subset", "test", data_root=tmp_path)
    assert train.classes == ["c0", "c1", "c2"] and train.info.num_classes == 3
    assert train.targets.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert test.targets.tolist() == [1, 1, 2, 2], "val labels follow the train classes even when one is absent"
    x, y = test[2]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and y == 2
    expected = normalised(torch.tensor(COLOURS[2], dtype=torch.uint8).view(3, 1, 1), "imagenet-subset")
    torch.testing.assert_close(x, expected.expand(3, 224, 224), atol=1e-5, rtol=0)
    assert train[4][0].shape == (3, 224, 224)


def test_tiny_imagenet_tree(tmp_path):
    wnids = fake_tiny_imagenet(tmp_path)
    train = get_dataset("tiny-imagenet", "train", data_root=tmp_path, augment=False)
    test = get_dataset("tiny-imagenet", "test", data_root=tmp_path)
    assert train.classes == wnids == ["n01", "n02", "n03"] and train.info.num_classes == 3
    assert DATASETS["tiny-imagenet"].num_classes == 200
    assert train.targets.tolist() == [0, 0, 0, 1, 1, 2, 2], "the _boxes.txt files are not images"
    assert test.targets.tolist() == [2, 0, 1, 2]
    for ds in (train, test):
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (3, 64, 64)
            if not ds.samples[i][0].endswith("grey.JPEG"):
                expected = normalised(torch.tensor(COLOURS[y], dtype=torch.uint8).view(3, 1, 1), "tiny-imagenet")
                assert (x - expected).abs().max() < 0.1, "solid colour of the image's own class"
    grey = next(i for i, (p, _) in enumerate(train.samples) if p.endswith("grey.JPEG"))
    x = train[grey][0]
    assert x.shape == (3, 64, 64), "greyscale JPEGs become RGB"


def test_tiny_imagenet_missing(tmp_path):
    (tmp_path / "tiny-imagenet-200" / "train").mkdir(parents=True)
    with pytest.raises(WorkbenchError) as err:
        get_dataset("tiny-imagenet", data_root=tmp_path)
    assert "val_annotations.txt" in str(err.value) and "download=true" in str(err.value)


def test_imagenet_subset_is_not_downloadable(tmp_path):
    with pytest.raises(WorkbenchError) as err:
        prepare("imagenet-subset", data_root=tmp_path, download=True)
    assert "cannot be downloaded" in str(err.value) and "download=true" not in str(err.value)


# ---------------------------------------------------------------- digits, subsets, names


def test_digits_split():
    train = get_dataset("digits", "train")
    test = get_dataset("digits", "test")
    assert len(train) + len(test) == 1797 and len(test) == 360
    assert train.info.num_classes == 10 and set(test.targets.tolist()) == set(range(10))
    assert train.images.max() == 16 and train.images.shape[1:] == (1, 8, 8)
    x, y = train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32
    torch.testing.assert_close(x, normalised(train.images[0], "digits", max_value=16.0))
    mean = (train.images.float() / 16).mean()
    assert abs(mean.item() - DATASETS["digits"].mean[0]) < 1e-3
    from sklearn.datasets import load_digits

    every = np.sort(np.concatenate([train.images.flatten(1).numpy(), test.images.flatten(1).numpy()]), axis=0)
    assert np.array_equal(every, np.sort(load_digits().data.astype(np.uint8), axis=0))


def test_stratified_indices_by_hand():
    targets = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    picked = stratified_indices(targets, 5, seed=0)
    # 5 * (6, 3, 1) / 10 = (3, 1.5, 0.5): floors (3, 1, 0), the one left goes to class 1 (tie, lower label)
    assert torch.bincount(targets[picked], minlength=3).tolist() == [3, 2, 0]
    assert picked.tolist() == sorted(set(picked.tolist()))
    assert torch.equal(picked, stratified_indices(targets, 5, seed=0))
    assert stratified_indices(targets, 10, seed=3).tolist() == list(range(10))
    with pytest.raises(WorkbenchError):
        stratified_indices(targets, 11, seed=0)


def test_holdout_indices_avoid_the_given_items_and_split_the_rest():
    from workbench.data import holdout_indices

    targets = torch.tensor([0] * 10 + [1] * 10)
    avoid = torch.tensor([0, 1, 2, 3, 10, 11, 12, 13])
    held, rest = holdout_indices(targets, 6, seed=0, avoid=avoid)
    assert torch.bincount(targets[held], minlength=2).tolist() == [3, 3]
    assert not set(held.tolist()) & set(avoid.tolist())
    assert sorted(held.tolist() + rest.tolist()) == list(range(20))
    assert torch.equal(held, holdout_indices(targets, 6, seed=0, avoid=avoid)[0])
    # too few items outside `avoid`: drawn from all items
    held, _ = holdout_indices(targets, 16, seed=0, avoid=avoid)
    assert len(held) == 16 and set(held.tolist()) & set(avoid.tolist())
    with pytest.raises(WorkbenchError, match="held-out split"):
        holdout_indices(targets, 20, seed=0)


def test_subset_is_stratified_and_seeded():
    full = get_dataset("digits", "train", augment=False)
    a = get_dataset("digits", "train", subset=100, seed=1)
    b = get_dataset("digits", "train", subset=100, seed=1)
    c = get_dataset("digits", "train", subset=100, seed=2)
    assert len(a) == 100 and torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    counts = torch.bincount(a.targets, minlength=10)
    expected = torch.bincount(full.targets, minlength=10) * 100 / len(full)
    assert ((counts - expected).abs() < 1).all()
    index = stratified_indices(full.targets, 100, seed=1)
    assert torch.equal(a.images, full.images[index]) and torch.equal(a.targets, full.targets[index])


def test_subset_of_folder_dataset(tmp_path):
    fake_imagenet_subset(tmp_path)
    ds = get_dataset("imagenet-subset", "train", data_root=tmp_path, subset=3, seed=0, augment=False)
    assert sorted(ds.targets.tolist()) == [0, 1, 2] and len(ds.samples) == 3


def test_unknown_names():
    with pytest.raises(WorkbenchError, match="did you mean 'cifar10'"):
        get_dataset("cifar-10")
    with pytest.raises(WorkbenchError, match="unknown split 'val'"):
        get_dataset("digits", "val")


def test_registry_entries_are_consistent():
    for name, info in DATASETS.items():
        assert info.name == name and len(info.mean) == len(info.std) == info.in_channels
        assert len(info.image_size) == 2 and info.how_to_get
    with pytest.raises(AttributeError):
        DATASETS["digits"].num_classes = 3  # frozen
    assert isinstance(get_dataset("digits", "test"), TensorImageDataset)
