"""``digits``: the 1,797 8x8 handwritten digits shipped inside scikit-learn (UCI optdigits test set), no download.

Pixel values 0..16 become uint8 0..255; images are upsampled once, at load time, to ``data.image_size``. The
stratified train/val split uses a fixed seed, independent of the run seed, so every method sees the same split.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torchvision.transforms.v2 import functional as TF

from sslrun.config import DataConfig
from sslrun.data import DATASETS
from sslrun.data.base import Splits, TensorImages
from sslrun.data.recipes import parse_image_size
from sslrun.errors import UserError

SPLIT_SEED = 0
DEFAULT_SIZE = 32  # data.image_size=auto: 8 px upsampled to the smallest size the backbones are built for


@DATASETS.register("digits")
def digits(cfg: DataConfig) -> Splits:
    """1,797 8x8 handwritten digits bundled with scikit-learn (offline), 10 classes, 1 channel."""
    if not 0.0 < cfg.val_fraction < 1.0:
        raise UserError(f"data.val_fraction={cfg.val_fraction} must be between 0 and 1 (exclusive)")
    raw = load_digits()
    pixels = torch.from_numpy(raw.images).float().mul(255.0 / 16.0).round().to(torch.uint8).unsqueeze(1)
    size = parse_image_size(cfg.image_size) or DEFAULT_SIZE
    images = TF.resize(pixels, [size, size], antialias=True)
    labels = torch.from_numpy(raw.target).long()
    train_idx, val_idx = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=cfg.val_fraction, stratify=raw.target, random_state=SPLIT_SEED
    )
    train_idx, val_idx = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    train_pixels = images[train_idx].float() / 255.0
    return Splits(
        train=TensorImages(images[train_idx], labels[train_idx]),
        val=TensorImages(images[val_idx], labels[val_idx]),
        num_classes=10,
        channels=1,
        mean=(train_pixels.mean().item(),),
        std=(train_pixels.std().item(),),
        image_size=size,
    )
