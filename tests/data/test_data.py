"""Every registered dataset, built from its own YAML on tiny files written in torchvision's on-disk formats: splits,
two-view pretraining batches, fine-tuning batches, deterministic eval loaders, and clear errors for absent files."""

import hashlib
import pickle
import struct
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torchvision import datasets

from sslrun.config import DataConfig
from sslrun.data import DATASETS, SSLDataModule
from sslrun.data.base import TensorImages, bounded_subset, is_stream, label_subset, split_labels, square_image
from sslrun.data.imagefolder import ImageFiles
from sslrun.shard import main as shard_main

CONFIGS = Path(__file__).resolve().parents[2] / "sslrun" / "configs" / "data"
DOWNLOADABLE = ("cifar10", "cifar100", "mnist", "fashion_mnist", "stl10")
rng = np.random.default_rng(0)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def fake_cifar(root: Path, monkeypatch, cls, per_file: int, num_classes: int) -> tuple[torch.Tensor, int]:
    """Pickled batches named as torchvision expects; the class's md5 table is pointed at these files, so the real
    integrity check and loader run unchanged. Returns the first training image (C, H, W) and label."""
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    label_key = "labels" if cls is datasets.CIFAR10 else "fine_labels"
    first = None
    tables = {}
    for table in ("train_list", "test_list"):
        rows = []
        for name, _ in getattr(cls, table):
            data = rng.integers(0, 256, (per_file, 3 * 32 * 32), dtype=np.uint8)
            labels = rng.integers(0, num_classes, per_file).tolist()
            (folder / name).write_bytes(pickle.dumps({"data": data, label_key: labels}))
            rows.append([name, md5(folder / name)])
            if first is None:
                first = (torch.from_numpy(data[0].reshape(3, 32, 32)), labels[0])
        tables[table] = rows
    meta = folder / cls.meta["filename"]
    meta.write_bytes(pickle.dumps({cls.meta["key"]: [f"c{i}" for i in range(num_classes)]}))
    for table, rows in tables.items():
        monkeypatch.setattr(cls, table, rows)
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(meta)})
    return first


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fake_mnist(root: Path, cls) -> tuple[torch.Tensor, int]:
    """idx files under <root>/<Class>/raw/ (torchvision checks their presence, not their md5)."""
    raw = root / cls.__name__ / "raw"
    raw.mkdir(parents=True)
    first = None
    for prefix, n in (("train", 13), ("t10k", 7)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        first = first or (torch.from_numpy(images[0]).unsqueeze(0), int(labels[0]))
    return first


def fake_stl10(root: Path, monkeypatch) -> tuple[torch.Tensor, int]:
    """Raw binaries under stl10_binary/ (images stored column-major, labels 1..10); md5 table patched as for CIFAR."""
    folder = root / datasets.STL10.base_folder
    folder.mkdir(parents=True)
    sizes = {"train": 6, "unlabeled": 5, "test": 5}
    first = None
    for split, n in sizes.items():
        images = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        (folder / f"{split}_X.bin").write_bytes(images.tobytes())
        if split != "unlabeled":
            labels = rng.integers(1, 11, n, dtype=np.uint8)
            (folder / f"{split}_y.bin").write_bytes(labels.tobytes())
            if split == "train":
                first = (torch.from_numpy(images[0]).transpose(1, 2), int(labels[0]) - 1)
    for table in ("train_list", "test_list"):
        rows = [[name, md5(folder / name)] for name, _ in getattr(datasets.STL10, table)]
        monkeypatch.setattr(datasets.STL10, table, rows)
    return first


def fake_imagefolder(root: Path) -> tuple[torch.Tensor, int]:
    first = None
    for split, n in (("train", 5), ("val", 3)):
        for label, cls in enumerate(("cat", "dog", "eel")):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
                first = first or (torch.from_numpy(pixels).permute(2, 0, 1), label)
    return first


def fake_shards(root: Path) -> None:
    """The fake image folder written as shards (``sslrun shard``, a few samples per shard) into ``root``."""
    fake_imagefolder(root / "src")
    shard_main([str(root / "src"), str(root), "--force", "--max-count", "4"])
    # the order is shuffled on write: no known first item


def fake(name: str, root: Path, monkeypatch) -> tuple[torch.Tensor, int] | None:
    makers = {
        "webdataset": lambda: fake_shards(root),
        "digits": lambda: None,
        "cifar10": lambda: fake_cifar(root, monkeypatch, datasets.CIFAR10, 3, 10),
        "cifar100": lambda: fake_cifar(root, monkeypatch, datasets.CIFAR100, 15, 100),
        "stl10": lambda: fake_stl10(root, monkeypatch),
        "mnist": lambda: fake_mnist(root, datasets.MNIST),
        "fashion_mnist": lambda: fake_mnist(root, datasets.FashionMNIST),
        "imagefolder": lambda: fake_imagefolder(root),
    }
    assert name in makers, f"dataset {name!r} has no fake files in tests/test_data.py; add a writer for it"
    return makers[name]()


def data_cfg(entry: str, **overrides) -> DataConfig:
    """The dataset's own YAML on the schema, with small-run overrides."""
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(CONFIGS / f"{entry}.yaml"))
    return OmegaConf.merge(cfg, {"batch_size": 4, "num_workers": 0, "download": False, **overrides})


@pytest.fixture(params=DATASETS.names())
def dataset(request, tmp_path, monkeypatch):
    """(name, cfg, first training item or None)."""
    name = request.param
    first = fake(name, tmp_path, monkeypatch)
    return name, data_cfg(name, root=str(tmp_path), limit=40 if name == "digits" else None), first


def items_of(split) -> list:
    """(image, label) items of a split: indexed, or in its order for a stream."""
    return list(split) if is_stream(split) else [split[i] for i in range(len(split))]


def labels_of(split) -> list[int]:
    return [int(label) for _, label in items_of(split)]


def test_splits_have_consistent_images_and_labels(dataset):
    name, cfg, first = dataset
    data = SSLDataModule(cfg, "pretrain")
    splits = data.splits
    assert splits.channels in (1, 3) and len(splits.mean) == len(splits.std) == splits.channels
    assert all(0 < s < 1 for s in splits.std) and all(0 <= m <= 1 for m in splits.mean)
    for split, lowest in ((splits.train, 0), (splits.val, 0), (splits.pretrain or splits.train, -1)):
        assert len(split) > 0
        for image, label in items_of(split):
            assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == splits.channels
            assert isinstance(label, int) and lowest <= label < splits.num_classes
    if first is not None:
        image, label = splits.train[0]
        # imagefolder decodes a tree that fits in data.cache_max_mb once, at data.image_size
        expected = square_image(first[0], data.image_size) if name == "imagefolder" else first[0]
        assert torch.equal(image, expected) and label == first[1]


def test_pretrain_batches_hold_two_different_views(dataset):
    name, cfg, _ = dataset
    data = SSLDataModule(cfg, "pretrain")
    source = data.splits.pretrain or data.splits.train
    loader = data.train_dataloader()
    assert len(loader) == len(source) // cfg.batch_size  # drop_last
    (view1, view2), labels = data.on_after_batch_transfer(next(iter(loader)), 0)
    shape = (cfg.batch_size, data.channels, data.image_size, data.image_size)
    assert view1.shape == view2.shape == shape and view1.dtype == view2.dtype == torch.float32
    assert not torch.equal(view1, view2)
    assert labels.shape == (cfg.batch_size,) and labels.min() >= -1 and labels.max() < data.num_classes
    assert data.image_size in (cfg.image_size, data.splits.image_size)


def test_finetune_batches_are_single_augmented_images(dataset):
    name, cfg, _ = dataset
    data = SSLDataModule(cfg, "finetune")
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (cfg.batch_size, data.channels, data.image_size, data.image_size)
    assert images.dtype == torch.float32 and labels.min() >= 0


def test_eval_loaders_are_deterministic_and_complete(dataset):
    name, cfg, _ = dataset
    data = SSLDataModule(cfg, "pretrain")
    for loader, split in zip(data.eval_dataloaders(), (data.splits.train, data.splits.val), strict=True):
        first = [(x.clone(), y.clone()) for x, y in loader]
        second = list(loader)
        assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(first, second, strict=True))
        images = torch.cat([x for x, _ in first])
        assert images.shape == (len(split), data.channels, data.image_size, data.image_size)
        assert torch.cat([y for _, y in first]).tolist() == labels_of(split)


@pytest.mark.parametrize("name", DOWNLOADABLE)
def test_absent_files_without_download_name_root_and_files(name, tmp_path):
    root = tmp_path / "nothing here"
    with pytest.raises(ValueError) as err:
        SSLDataModule(data_cfg(name, root=str(root)), "pretrain")
    message = str(err.value)
    assert "\n" not in message and str(root) in message and "data.download=true" in message
    assert "missing" in message and "download failed" not in message and "://" not in message


@pytest.mark.parametrize("name", DOWNLOADABLE)
def test_failed_download_is_a_user_error(name, tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ValueError) as err:
        SSLDataModule(data_cfg(name, root=str(tmp_path), download=True), "pretrain")
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message and "download failed" in message
    assert "://" not in message


def test_default_root_is_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ValueError, match=str(tmp_path / ".cache" / "sslrun" / "cifar10")):
        SSLDataModule(data_cfg("cifar10", root=None), "pretrain")


def test_corrupted_cifar_file_is_reported_as_corrupted(tmp_path, monkeypatch):
    fake_cifar(tmp_path, monkeypatch, datasets.CIFAR10, 3, 10)
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="corrupted or incomplete"):
        SSLDataModule(data_cfg("cifar10", root=str(tmp_path)), "pretrain")


def test_stl10_pretrains_on_unlabeled_plus_train(tmp_path, monkeypatch):
    fake_stl10(tmp_path, monkeypatch)
    splits = SSLDataModule(data_cfg("stl10", root=str(tmp_path)), "pretrain").splits
    assert labels_of(splits.pretrain)[:5] == [-1] * 5 and min(labels_of(splits.pretrain)[5:]) >= 0
    assert len(splits.pretrain) == 11 and len(splits.train) == 6 and len(splits.val) == 5


def test_digits_split_is_fixed_stratified_and_upsampled():
    torch.manual_seed(1)
    a = SSLDataModule(data_cfg("digits"), "pretrain").splits
    torch.manual_seed(2)
    b = SSLDataModule(data_cfg("digits"), "pretrain").splits
    assert len(a.train) == 1437 and len(a.val) == 360 and a.num_classes == 10
    assert labels_of(a.val) == labels_of(b.val)
    assert torch.equal(a.train[0][0], b.train[0][0]) and a.train[0][0].shape == (1, 32, 32)
    counts = np.bincount(labels_of(a.val), minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    assert a.train[0][0].max() > 200  # 0..16 scaled to 0..255


def test_limit_keeps_evenly_spaced_items_of_every_split():
    full = SSLDataModule(data_cfg("digits"), "pretrain").splits
    data = SSLDataModule(data_cfg("digits", limit=10), "pretrain")
    assert len(data.splits.train) == len(data.splits.val) == 10
    step = len(full.val) / 10
    assert torch.equal(data.splits.val[0][0], full.val[0][0])
    assert torch.equal(data.splits.val[9][0], full.val[int(9 * step)][0])


def test_bad_sizes_and_names_are_user_errors():
    with pytest.raises(ValueError, match="data.batch_size=64 is larger than the 40 training images"):
        SSLDataModule(data_cfg("digits", limit=40, batch_size=64), "pretrain")
    with pytest.raises(ValueError, match="val_fraction"):
        SSLDataModule(data_cfg("digits", val_fraction=1.0), "pretrain")
    with pytest.raises(ValueError, match="unknown dataset 'cifar11'.*cifar10"):
        SSLDataModule(data_cfg("digits", name="cifar11"), "pretrain")


def test_two_views_through_worker_processes():
    data = SSLDataModule(data_cfg("digits", limit=16, num_workers=1, views={"batched": False}), "pretrain")
    loader = data.train_dataloader()
    assert loader.persistent_workers
    (view1, view2), _ = next(iter(loader))
    assert view1.shape == (4, 1, 32, 32) and not torch.equal(view1, view2)
    assert data.eval_dataloaders() is data.eval_dataloaders()


def test_label_subset_is_seeded_stratified_nested_and_keeps_every_class():
    labels = torch.from_numpy(rng.integers(0, 10, 1000))
    counts = torch.bincount(labels, minlength=10)
    tenth = label_subset(labels, 0.1, seed=0)
    assert torch.equal(torch.bincount(labels[tenth], minlength=10), (0.1 * counts).round().clamp_min(1).long())
    assert torch.equal(tenth, label_subset(labels, 0.1, seed=0)) and tenth.tolist() == sorted(tenth.tolist())
    assert not torch.equal(tenth, label_subset(labels, 0.1, seed=1))
    assert set(tenth.tolist()) <= set(label_subset(labels, 0.5, seed=0).tolist())
    assert torch.equal(torch.bincount(labels[label_subset(labels, 0.001, seed=0)]), torch.ones(10, dtype=torch.long))
    assert torch.equal(label_subset(labels, 1.0, seed=0), torch.arange(1000))


def test_label_fraction_reduces_the_finetune_train_split_only(caplog):
    full = SSLDataModule(data_cfg("digits"), "finetune", seed=0)
    few = SSLDataModule(data_cfg("digits", label_fraction=0.01), "finetune", seed=0)
    train_labels = torch.tensor(labels_of(few.splits.train))
    expected = (0.01 * torch.bincount(split_labels(full.splits.train))).round().clamp_min(1).long()
    assert torch.equal(torch.bincount(train_labels, minlength=10), expected) and len(few.splits.train) == 10
    assert len(few.eval_dataloaders()[0].dataset) == 10  # the kNN bank and the probe's training features
    assert torch.equal(few.splits.val.images, full.splits.val.images)  # the val split is never reduced
    assert labels_of(few.splits.val) == labels_of(full.splits.val)
    other = SSLDataModule(data_cfg("digits", label_fraction=0.01), "finetune", seed=1)
    assert few.splits.train.indices != other.splits.train.indices
    with pytest.raises(ValueError, match="data.label_fraction=0.5 is for sslrun finetune; pretraining uses no labels"):
        SSLDataModule(data_cfg("digits", label_fraction=0.5), "pretrain")
    with caplog.at_level("WARNING"):  # a probe needs no full batches: a low-shot subset smaller than one still trains
        small = SSLDataModule(data_cfg("digits", label_fraction=0.01, batch_size=16), "finetune")
    assert small.cfg.batch_size == 10 and len(small.train_dataloader()) == 1
    assert (
        "data.batch_size=16 is larger than the 10 training images of data=digits at data.label_fraction" in caplog.text
    )


def test_split_labels_reads_image_files_without_decoding_them():
    files = ImageFiles([(f"/nowhere/{i}.png", i % 3) for i in range(7)], channels=3)
    assert split_labels(torch.utils.data.Subset(files, [6, 1, 2])).tolist() == [0, 1, 2]


def test_bounded_subset_is_at_most_the_limit_stratified_seeded_and_whole_below_it():
    data = TensorImages(torch.zeros(1000, 1, 2, 2, dtype=torch.uint8), torch.arange(1000) % 4)
    assert bounded_subset(data, None, 0) is data and bounded_subset(data, 1000, 0) is data
    cut = bounded_subset(data, 101, seed=0)
    labels = split_labels(cut)
    assert 97 <= len(cut) <= 101 and set(torch.bincount(labels).tolist()) <= {25, 26}  # each class near its share
    assert cut.indices == bounded_subset(data, 101, seed=0).indices != bounded_subset(data, 101, seed=1).indices
