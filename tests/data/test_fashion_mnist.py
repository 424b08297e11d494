"""``data=fashion_mnist``: the embedded 8,000/2,000 split of the test set offline, Debian's flat folder of IDX .gz
files through ``data.root``, clear errors for corrupt files, and a pretraining run from a fresh home directory."""

import gzip
import json
import os
import struct
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from sslrun.config import DataConfig
from sslrun.data import SSLDataModule, fashion_mnist
from sslrun.data.torchvision_sets import FASHION_MNIST_STATS

CONFIG = Path(__file__).resolve().parents[2] / "sslrun" / "configs" / "data" / "fashion_mnist.yaml"
DEBIAN = Path("/usr/share/datasets/fashion-mnist")
SSLRUN = str(Path(sys.executable).with_name("sslrun"))


def data_cfg(**overrides) -> DataConfig:
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(CONFIG))
    return OmegaConf.merge(cfg, {"batch_size": 4, **overrides})


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_flat(folder: Path, sizes=(("train", 12), ("t10k", 5))) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Debian's layout: ``<prefix>-images-idx3-ubyte.gz`` and ``<prefix>-labels-idx1-ubyte.gz`` side by side."""
    rng = np.random.default_rng(0)
    written = {}
    for prefix, n in sizes:
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
        written[prefix] = (images, labels)
    return written


@pytest.fixture
def offline(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_embedded_default_is_a_fixed_stratified_8000_2000_split(offline):
    torch.manual_seed(1)
    a = SSLDataModule(data_cfg(), "pretrain").splits
    torch.manual_seed(2)
    b = SSLDataModule(data_cfg(), "pretrain").splits
    assert len(a.train) == 8000 and len(a.val) == 2000
    assert a.num_classes == 10 and a.channels == 1 and a.pretrain is None
    for split in (a.train, a.val):
        assert split.images.shape[1:] == (1, 28, 28) and split.images.dtype == torch.uint8
        assert split.labels.dtype == torch.int64
    assert torch.bincount(a.train.labels).tolist() == [800] * 10
    assert torch.bincount(a.val.labels).tolist() == [200] * 10
    for x, y in ((a.train, b.train), (a.val, b.val)):
        assert torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels)
    assert 0.25 < a.mean[0] < 0.32 and 0.32 < a.std[0] < 0.38  # the 8,000 training images' own stats
    assert not (Path(os.environ["HOME"]) / ".cache").exists()


def test_val_fraction_sets_the_embedded_split():
    splits = SSLDataModule(data_cfg(val_fraction=0.25), "pretrain").splits
    assert len(splits.train) == 7500 and len(splits.val) == 2500
    with pytest.raises(ValueError, match="val_fraction"):
        SSLDataModule(data_cfg(val_fraction=0.0), "pretrain")


def test_embedded_pretrain_batch_holds_two_views(offline):
    data = SSLDataModule(data_cfg(limit=16), "pretrain")
    (view1, view2), labels = data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)
    assert view1.shape == view2.shape == (4, 1, 28, 28) and not torch.equal(view1, view2)
    assert labels.min() >= 0 and labels.max() < 10


def test_flat_debian_folder_is_read_from_root(offline, tmp_path):
    written = write_flat(tmp_path)
    splits = SSLDataModule(data_cfg(root=str(tmp_path), download=True), "pretrain").splits
    for split, prefix in ((splits.train, "train"), (splits.val, "t10k")):
        images, labels = written[prefix]
        assert torch.equal(split.images, torch.from_numpy(images).unsqueeze(1))
        assert split.labels.tolist() == labels.tolist()
    assert (splits.mean, splits.std) == FASHION_MNIST_STATS


@pytest.mark.skipif(not (DEBIAN / "train-images-idx3-ubyte.gz").is_file(), reason="dataset-fashion-mnist not installed")
def test_debian_package_gives_the_full_set():
    splits = fashion_mnist.fashion_mnist(data_cfg(root=str(DEBIAN)))
    assert len(splits.train) == 60000 and len(splits.val) == 10000


CORRUPTIONS = {
    "not gzip": lambda raw: raw,
    "truncated gzip": lambda raw: gzip.compress(raw)[:-20],
    "bad magic": lambda raw: gzip.compress(b"\x00\x00\x0d\x03" + raw[4:]),
    "short payload": lambda raw: gzip.compress(raw[:-100]),
    "empty": lambda raw: gzip.compress(b""),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupt_idx_file_is_a_user_error_naming_it(tmp_path, corruption):
    write_flat(tmp_path)
    broken = tmp_path / "t10k-images-idx3-ubyte.gz"
    broken.write_bytes(CORRUPTIONS[corruption](gzip.decompress(broken.read_bytes())))
    with pytest.raises(ValueError) as err:
        SSLDataModule(data_cfg(root=str(tmp_path)), "pretrain")
    assert str(broken) in str(err.value) and "\n" not in str(err.value)


def test_mismatched_labels_and_missing_files_are_user_errors(tmp_path, monkeypatch):
    write_flat(tmp_path, sizes=(("train", 12), ("t10k", 5)))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(4, np.uint8))))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz does not hold 5 labels"):
        SSLDataModule(data_cfg(root=str(tmp_path)), "pretrain")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz is missing"):
        SSLDataModule(data_cfg(root=str(tmp_path)), "pretrain")
    monkeypatch.setattr(fashion_mnist, "EMBEDDED", tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="elsewhere/t10k-images-idx3-ubyte.gz is missing"):
        SSLDataModule(data_cfg(), "pretrain")


def test_pretrain_cli_on_the_embedded_default_from_a_fresh_home(tmp_path):
    home = tmp_path / "home"
    args = ["data=fashion_mnist", "data.limit=64", "data.batch_size=16", "backbone=convnet", "backbone.width=0.25"]
    proc = subprocess.run(
        [SSLRUN, "pretrain", *args, "trainer=debug", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "HOME": str(home)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 4 and 0.0 <= metrics["knn_top1"] <= 1.0
    assert not (home / ".cache" / "sslrun").exists()
