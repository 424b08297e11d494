"""``digits``: the 1,797 8x8 handwritten digits shipped inside scikit-learn (UCI optdigits test set), no download.

Pixel values 0..16 become uint8 0..255; images are upsampled once, at load time, to ``data.image_size``. The
stratified train/val split uses a fixed seed, independent of the run seed, so every method sees the same split.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torchvision.transforms.v2 import functional as TF

from sslrun.config import DataConfig
from sslrun.data import DATASETS
from sslrun.data.base import Splits, grayscale_splits
from sslrun.data.recipes import parse_image_size

DEFAULT_SIZE = 32  # data.image_size=auto: 8 px upsampled to the smallest size the backbones are built for


@DATASETS.register("digits")
def digits(cfg: DataConfig) -> Splits:
    """1,797 8x8 handwritten digits bundled with scikit-learn (offline), 10 classes, 1 channel."""
    raw = load_digits()
    pixels = torch.from_numpy(raw.images).float().mul(255.0 / 16.0).round().to(torch.uint8).unsqueeze(1)
    size = parse_image_size(cfg.image_size) or DEFAULT_SIZE
    images = TF.resize(pixels, [size, size], antialias=True)
    return grayscale_splits(images, torch.from_numpy(raw.target).long(), cfg.val_fraction, 10, size)
