"""``fashion_mnist``: Zalando's Fashion-MNIST, 28x28 grayscale article photos in 10 classes.

Source: https://github.com/zalandoresearch/fashion-mnist (Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747). MIT
licence, Copyright (c) 2017 Zalando SE: ``embedded/fashion_mnist/LICENSE``, shipped with the package.

``data.root`` null (the default): the upstream 10,000-image test split, embedded in the package as its two gzipped
IDX files (4.4 MB), split 8,000 train / 2,000 val (``data.val_fraction``), stratified, with a fixed seed independent
of the run seed. It is embedded so that the dataset works on any fresh machine right after ``pip install``: no
network, no cache, the same split everywhere. Normalisation stats are those of the 8,000 training images.

The full 60,000 / 10,000 set: ``data.root=DIR``. A DIR holding the upstream ``*-idx?-ubyte.gz`` files flat (Debian's
``dataset-fashion-mnist`` installs them in ``/usr/share/datasets/fashion-mnist``) is read with the same IDX reader;
any other DIR is torchvision's ``FashionMNIST`` layout, downloaded there with ``data.download=true``. Either way the
val split is the test split and the stats are the published ones of the 60k training images.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets

from sslrun.config import DataConfig
from sslrun.data import DATASETS
from sslrun.data.base import Splits, TensorImages, grayscale_splits
from sslrun.data.torchvision_sets import FASHION_MNIST_STATS, _mnist

EMBEDDED = Path(__file__).resolve().parent / "embedded" / "fashion_mnist"
SIZE = 28
NUM_CLASSES = 10
IDX_UBYTE = 0x08  # IDX element type code of unsigned bytes


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file of unsigned bytes (magic 0x0000 08 <ndim>, ndim big-endian uint32 sizes, the payload)."""
    try:
        with gzip.open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        raise ValueError(f"data=fashion_mnist: {path} is missing") from None
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError; a truncated stream an EOFError
        raise ValueError(f"data=fashion_mnist: {path} is not a readable gzip file ({type(err).__name__})") from None
    ndim = data[3] if len(data) >= 4 else 0
    if len(data) < 4 or data[:3] != bytes((0, 0, IDX_UBYTE)) or ndim == 0:
        raise ValueError(f"data=fashion_mnist: {path} is corrupt: not an IDX file of unsigned bytes (bad magic number)")
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) < header or len(data) - header != math.prod(shape):
        raise ValueError(
            f"data=fashion_mnist: {path} is corrupt: its header says {shape}, "
            f"but it holds {max(len(data) - header, 0)} bytes of data"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_split(folder: Path, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 1, 28, 28) and int64 labels (N,) from ``<prefix>-{images-idx3,labels-idx1}-ubyte.gz``."""
    images_path, labels_path = (folder / f"{prefix}-{kind}-ubyte.gz" for kind in ("images-idx3", "labels-idx1"))
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (SIZE, SIZE):
        raise ValueError(f"data=fashion_mnist: {images_path} holds {images.shape} values, not N 28x28 images")
    if labels.shape != images.shape[:1] or (len(labels) and labels.max() >= NUM_CLASSES):
        raise ValueError(
            f"data=fashion_mnist: {labels_path} does not hold {len(images)} labels 0..9 for {images_path.name}"
        )
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def embedded(val_fraction: float) -> Splits:
    images, labels = read_split(EMBEDDED, "t10k")
    return grayscale_splits(images, labels, val_fraction, NUM_CLASSES, SIZE)


def flat(folder: Path) -> Splits:
    train, test = (TensorImages(*read_split(folder, prefix)) for prefix in ("train", "t10k"))
    mean, std = FASHION_MNIST_STATS
    return Splits(train, test, num_classes=NUM_CLASSES, channels=1, mean=mean, std=std, image_size=SIZE)


@DATASETS.register("fashion_mnist")
def fashion_mnist(cfg: DataConfig) -> Splits:
    """Fashion-MNIST 28x28 grayscale, 10 classes: 8k/2k of the embedded test split, offline; 60k/10k: data.root."""
    if cfg.root is None:
        return embedded(cfg.val_fraction)
    root = Path(cfg.root).expanduser()
    if (root / "train-images-idx3-ubyte.gz").is_file():
        return flat(root)
    return _mnist(datasets.FashionMNIST, cfg, FASHION_MNIST_STATS)
