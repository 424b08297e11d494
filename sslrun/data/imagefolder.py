"""``imagefolder``: a user's image tree in the torchvision ImageFolder convention, ``ROOT/train/<class>/*`` and
``ROOT/val/<class>/*`` (classes come from ``train``). Every image is decoded once up front, so an unreadable file is
reported before training: skipped with a warning, or a UserError with ``data.strict=true``.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from sslrun.config import DataConfig
from sslrun.data import DATASETS
from sslrun.data.base import Splits
from sslrun.errors import UserError

log = logging.getLogger(__name__)
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
LAYOUT = "expected layout: ROOT/train/<class>/<image> and ROOT/val/<class>/<image> (png, jpg, ...)"
WIDE_INTEGER_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: 16/32-bit integer images are scaled from 0..65535, transparency is composited on white."""
    if image.mode in WIDE_INTEGER_MODES:
        pixels = np.asarray(image, dtype=np.float32) / 257.0
        return Image.fromarray(pixels.clip(0, 255).round().astype(np.uint8)).convert("RGB")
    if image.has_transparency_data:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str) -> torch.Tensor:
    """Decode the image file at ``path`` to uint8 (3, H, W)."""
    with Image.open(path) as image:
        rgb = to_rgb(image)
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)


class ImageFiles(Dataset):
    """(path, label) samples decoded on access to (uint8 (3, H, W), label)."""

    def __init__(self, samples: list[tuple[str, int]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return load_rgb(path), label


def _problem(path: str) -> str | None:
    """None if ``path`` decodes, else the reason it does not."""
    try:
        load_rgb(path)
    except Exception as err:  # any decoder failure (OSError, SyntaxError, ValueError, ...) means unreadable
        text = str(err).strip()
        return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__
    return None


def _readable(folder: Path, samples: list[tuple[str, int]], strict: bool) -> list[tuple[str, int]]:
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        problems = list(pool.map(_problem, (path for path, _ in samples)))
    bad = [(path, reason) for (path, _), reason in zip(samples, problems, strict=True) if reason is not None]
    if not bad:
        return samples
    first, reason = bad[0]
    if strict:
        raise UserError(
            f"data=imagefolder: cannot read {first} ({reason}); fix or remove it, or pass data.strict=false to skip "
            f"unreadable images ({len(bad)} of {len(samples)} under {folder} are unreadable)"
        )
    log.warning(
        "skipped %d unreadable images of %d under %s (first: %s): pass data.strict=true to fail instead",
        len(bad),
        len(samples),
        folder,
        first,
    )
    return [sample for sample, reason in zip(samples, problems, strict=True) if reason is None]


def _split(root: Path, name: str, class_to_idx: dict[str, int], strict: bool) -> ImageFiles:
    folder = root / name
    if not folder.is_dir():
        raise UserError(f"data=imagefolder: no '{name}' folder in {root}; {LAYOUT}")
    unknown = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and entry.name not in class_to_idx)
    if unknown:
        log.warning("ignoring class folders of %s that train lacks: %s", folder, ", ".join(unknown))
    samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise UserError(f"data=imagefolder: no images in the class folders of {folder}; {LAYOUT}")
    samples = _readable(folder, samples, strict)
    if not samples:
        raise UserError(f"data=imagefolder: no readable images under {folder}; {LAYOUT}")
    return ImageFiles(samples)


@DATASETS.register("imagefolder")
def imagefolder(cfg: DataConfig) -> Splits:
    """Your own images: data.root=DIR with DIR/train/<class>/* and DIR/val/<class>/* (RGB, 3 channels)."""
    if cfg.root is None:
        raise UserError(f"data=imagefolder needs data.root=DIR; {LAYOUT}")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise UserError(f"data.root={root} is not a directory; {LAYOUT}")
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise UserError(f"data=imagefolder: no 'train' folder in {root}; {LAYOUT}")
    try:
        classes, class_to_idx = find_classes(str(train_dir))
    except FileNotFoundError:
        raise UserError(f"data=imagefolder: no class folders in {train_dir}; {LAYOUT}") from None
    return Splits(
        train=_split(root, "train", class_to_idx, cfg.strict),
        val=_split(root, "val", class_to_idx, cfg.strict),
        num_classes=len(classes),
        channels=3,
        mean=IMAGENET_STATS[0],
        std=IMAGENET_STATS[1],
    )
