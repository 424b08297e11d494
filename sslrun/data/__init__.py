"""Datasets. Each registry entry maps a ``DataConfig`` to ``Splits`` of uint8 (C, H, W) images and int labels."""

from sslrun.registry import Registry

DATASETS = Registry("dataset")

# registration side effects
from sslrun.data import digits, fashion_mnist, imagefolder, shards, torchvision_sets  # noqa: E402,F401
from sslrun.data.base import Splits, SSLDataModule  # noqa: E402

__all__ = ["DATASETS", "SSLDataModule", "Splits"]
