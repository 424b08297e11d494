"""Standard benchmarks through torchvision's own dataset classes: ``cifar10``, ``cifar100``, ``stl10``, ``mnist``
(and ``fashion_mnist`` given a ``data.root``: ``sslrun.data.fashion_mnist``). Files live under ``data.root`` (default
``~/.cache/sslrun/<name>``) in torchvision's layout; the decoded arrays torchvision loads are wrapped as uint8 tensors
without a copy. Missing files that cannot be downloaded end in a ValueError naming the files and the directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch.utils.data import ConcatDataset
from torchvision import datasets

from sslrun.config import DataConfig
from sslrun.data import DATASETS
from sslrun.data.base import Splits, TensorImages

CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
STL10_STATS = ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713))
MNIST_STATS = ((0.1307,), (0.3081,))
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))


def dataset_root(cfg: DataConfig) -> Path:
    return Path(cfg.root if cfg.root is not None else f"~/.cache/sslrun/{cfg.name}").expanduser()


def _expected_files(cls: type) -> list[str]:
    """Paths, relative to the root, that the torchvision class needs."""
    if issubclass(cls, datasets.MNIST):
        return [f"{cls.__name__}/raw/{os.path.splitext(name)[0]}" for name, _ in cls.resources]
    names = [name for name, _ in cls.train_list + cls.test_list]
    if issubclass(cls, datasets.CIFAR10):
        names.append(cls.meta["filename"])
    return [f"{cls.base_folder}/{name}" for name in names]


def _missing_message(cls: type, cfg: DataConfig, root: Path, error: Exception) -> str:
    expected = _expected_files(cls)
    missing = [name for name in expected if not (root / name).is_file()]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        what = f"missing {', '.join(missing[:3])}{more}"
    else:
        what = f"corrupted or incomplete files ({', '.join(expected)})"
    reason = re.sub(r"\S+://\S+", "<url>", str(error).strip().splitlines()[0] if str(error).strip() else "")
    tried = f"download failed ({type(error).__name__}: {reason}); " if cfg.download else ""
    return (
        f"data={cfg.name}: {what} under {root}; {tried}place the torchvision '{cls.__name__}' files under {root} "
        "or run with network access and data.download=true"
    )


def _open(cls: type, cfg: DataConfig, **kwargs: object) -> datasets.VisionDataset:
    """The real torchvision dataset, downloading if ``data.download``; a ValueError when its files are unavailable."""
    root = dataset_root(cfg)
    try:
        return cls(str(root), download=cfg.download, **kwargs)
    except (OSError, RuntimeError) as err:  # URLError and socket errors are OSErrors; md5/absent files RuntimeError
        raise ValueError(_missing_message(cls, cfg, root, err)) from None


def _hwc(data: object, labels: object) -> TensorImages:
    """numpy (N, H, W, C) uint8 -> (N, C, H, W) view."""
    return TensorImages(torch.from_numpy(data).permute(0, 3, 1, 2), torch.as_tensor(labels))


def _cifar(cls: type, cfg: DataConfig, num_classes: int, stats: tuple[tuple[float, ...], ...]) -> Splits:
    train, test = (_open(cls, cfg, train=flag) for flag in (True, False))
    wrap = [_hwc(ds.data, ds.targets) for ds in (train, test)]
    return Splits(*wrap, num_classes, 3, *stats, image_size=32)


def _mnist(cls: type, cfg: DataConfig, stats: tuple[tuple[float, ...], ...]) -> Splits:
    train, test = (_open(cls, cfg, train=flag) for flag in (True, False))
    wrap = [TensorImages(ds.data.unsqueeze(1), ds.targets) for ds in (train, test)]
    return Splits(*wrap, num_classes=len(cls.classes), channels=1, mean=stats[0], std=stats[1], image_size=28)


@DATASETS.register("cifar10")
def cifar10(cfg: DataConfig) -> Splits:
    """CIFAR-10 via torchvision: 50k/10k 32x32 RGB images, 10 classes."""
    return _cifar(datasets.CIFAR10, cfg, 10, CIFAR10_STATS)


@DATASETS.register("cifar100")
def cifar100(cfg: DataConfig) -> Splits:
    """CIFAR-100 via torchvision: 50k/10k 32x32 RGB images, 100 classes."""
    return _cifar(datasets.CIFAR100, cfg, 100, CIFAR100_STATS)


@DATASETS.register("stl10")
def stl10(cfg: DataConfig) -> Splits:
    """STL-10 via torchvision: pretrain on 100k unlabelled + 5k train 96x96 images; evaluate train/test, 10 classes."""
    splits = {split: _open(datasets.STL10, cfg, split=split) for split in ("unlabeled", "train", "test")}
    wrap = {name: TensorImages(torch.from_numpy(ds.data), torch.from_numpy(ds.labels)) for name, ds in splits.items()}
    return Splits(
        train=wrap["train"],
        val=wrap["test"],
        num_classes=10,
        channels=3,
        mean=STL10_STATS[0],
        std=STL10_STATS[1],
        pretrain=ConcatDataset([wrap["unlabeled"], wrap["train"]]),
        image_size=96,
    )


@DATASETS.register("mnist")
def mnist(cfg: DataConfig) -> Splits:
    """MNIST via torchvision: 60k/10k 28x28 grayscale digits, 10 classes."""
    return _mnist(datasets.MNIST, cfg, MNIST_STATS)
