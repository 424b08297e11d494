"""``imagefolder``: a user's own images under ``data.root``, in any of three layouts (checked in this order):

- ``ROOT/train/<class>/*`` + ``ROOT/val/<class>/*``: torchvision's ImageFolder convention (classes from ``train``);
- ``ROOT/<class>/*``: class folders; a seeded, stratified ``data.val_fraction`` of each class becomes the val split;
- any other tree of images (flat or nested): no labels; pretraining runs, the label monitors are skipped.

Start-up does not grow with the tree beyond the directory walk: the headers (size and mode, no decode) of a seeded
random sample of at most 2,000 files resolve ``data.image_size=auto`` (the median short side, rounded to 8 px, within
[32, 224]) and the channels (1 when every sampled image is grayscale, 8- or 16-bit; else 3). Then either each file is
decoded once into a uint8 tensor in RAM (``data.cache``: ``ram``, or ``auto`` when the decoded tree fits in
``data.cache_max_mb``), or the tree is streamed (``none``, or ``auto`` when it does not fit): nothing is decoded up
front, the loader's workers decode at each epoch, and a file that fails to decode is replaced by the next one and
counted (the log says how many each epoch; ``metrics.json`` has ``unreadable_images``). ``data.strict=true`` decodes
every file once before training and stops at the first unreadable one.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from statistics import median

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from sslrun.config import DataConfig
from sslrun.data import DATASETS
from sslrun.data.base import Splits, TensorImages, holdout, square_image
from sslrun.data.recipes import parse_image_size

log = logging.getLogger(__name__)
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
GRAY_STATS = ((0.449,), (0.226,))
LAYOUT = "expected ROOT/train/<class>/* + ROOT/val/<class>/*, ROOT/<class>/*, or a folder of images (png, jpg, ...)"
WIDE_INTEGER_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
GRAY_MODES = ("1", "L", "LA", *WIDE_INTEGER_MODES)
AUTO_SIZE_BOUNDS = (32, 224)
HEADER_SAMPLE = 2000  # files whose headers decide data.image_size=auto and the channels
CACHE_MODES = ("auto", "ram", "none")


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode -> 8-bit L (``channels=1``) or RGB: 16/32-bit integer images are scaled from 0..65535,
    transparency is composited on white."""
    if image.mode in WIDE_INTEGER_MODES:
        pixels = np.asarray(image, dtype=np.float32) / 257.0
        image = Image.fromarray(pixels.clip(0, 255).round().astype(np.uint8))
    elif image.has_transparency_data:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA"))
    return image.convert("L" if channels == 1 else "RGB")


def load_image(path: str, channels: int = 3) -> torch.Tensor:
    """Decode the image file at ``path`` to uint8 (channels, H, W)."""
    with Image.open(path) as image:
        pixels = np.asarray(to_mode(image, channels)).copy()
    tensor = torch.from_numpy(pixels)
    return tensor.unsqueeze(0) if channels == 1 else tensor.permute(2, 0, 1)


class ImageFiles(Dataset):
    """(path, label) samples decoded on access to (uint8 (channels, H, W), label). With ``skip_unreadable`` a file
    that fails to decode is replaced by the next readable one and its path appended to ``unreadable_log`` (a file:
    the loader's worker processes share it); otherwise the failure is raised."""

    def __init__(
        self,
        samples: list[tuple[str, int]],
        channels: int,
        skip_unreadable: bool = False,
        unreadable_log: str | None = None,
    ) -> None:
        self.samples = samples
        self.channels = channels
        self.skip_unreadable = skip_unreadable
        self.unreadable_log = unreadable_log

    @property
    def labels(self) -> torch.Tensor:
        """(N,) labels from the sample list, no image decoded."""
        return torch.tensor([label for _, label in self.samples], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not self.skip_unreadable:
            path, label = self.samples[index]
            return load_image(path, self.channels), label
        for step in range(min(len(self.samples), MAX_REPLACEMENTS)):
            path, label = self.samples[(index + step) % len(self.samples)]
            try:
                return load_image(path, self.channels), label
            except Exception as err:  # any decoder failure: skip the file, count it
                if self.unreadable_log:
                    with open(self.unreadable_log, "a") as f:
                        f.write(f"{path}\t{_reason(err)}\n")
        raise ValueError(
            f"data=imagefolder: {MAX_REPLACEMENTS} unreadable images in a row from {path}; check the files"
        )


MAX_REPLACEMENTS = 64


@dataclass
class Header:
    short_side: int
    gray: bool


def _reason(err: Exception) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _attempt(read: Callable[[str], object], path: str) -> object:
    """``read(path)``, or the reason (a str) the file is unreadable."""
    try:
        return read(path)
    except Exception as err:  # any decoder failure (OSError, SyntaxError, ValueError, ...) means unreadable
        return _reason(err)


def _header(path: str) -> Header:
    """Size and mode from the file's header (no pixel decode)."""
    with Image.open(path) as image:
        return Header(min(image.size), image.mode in GRAY_MODES)


def _parallel(fn: Callable, items: list) -> list:
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(fn, items))


class Unreadable:
    """Counts unreadable files across both passes; fails on the first one with ``data.strict=true``."""

    def __init__(self, root: Path, total: int, strict: bool) -> None:
        self.root, self.total, self.strict = root, total, strict
        self.bad: list[tuple[str, str]] = []

    def keep(self, samples: list[tuple[str, int]], results: list) -> list[int]:
        """Indices of the samples whose result is not an error string; the others are recorded."""
        kept = []
        for i, ((path, _), result) in enumerate(zip(samples, results, strict=True)):
            if isinstance(result, str):
                if self.strict:
                    raise ValueError(
                        f"data=imagefolder: cannot read {path} ({result}); fix or remove it, or pass data.strict=false "
                        f"to skip unreadable images"
                    )
                self.bad.append((path, result))
            else:
                kept.append(i)
        return kept

    def report(self) -> None:
        if self.bad:
            log.warning(
                "skipped %d unreadable images of %d under %s (first: %s): pass data.strict=true to fail instead",
                len(self.bad),
                self.total,
                self.root,
                self.bad[0][0],
            )


def _files_under(folder: Path) -> list[str]:
    return sorted(
        os.path.join(dirpath, name)
        for dirpath, _, names in os.walk(folder, followlinks=True)
        for name in names
        if name.lower().endswith(IMG_EXTENSIONS)
    )


def _class_split(root: Path, name: str, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    folder = root / name
    if not folder.is_dir():
        raise ValueError(f"data=imagefolder: no '{name}' folder in {root}; {LAYOUT}")
    unknown = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and entry.name not in class_to_idx)
    if unknown:
        log.warning("ignoring class folders of %s that train lacks: %s", folder, ", ".join(unknown))
    samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise ValueError(f"data=imagefolder: no images in the class folders of {folder}; {LAYOUT}")
    return samples


def _holdout(samples: list[tuple[str, int]], fraction: float, stratify: bool) -> tuple[list, list]:
    labels = [label for _, label in samples] if stratify else None
    train, val = holdout(len(samples), fraction, labels)
    return sorted(samples[i] for i in train.tolist()), sorted(samples[i] for i in val.tolist())


def discover(root: Path, val_fraction: float) -> tuple[list[tuple[str, int]], list[tuple[str, int]], list[str], str]:
    """(train samples, val samples, class names, layout description); label -1 for unlabelled trees."""
    if (root / "train").is_dir():
        try:
            classes, class_to_idx = find_classes(str(root / "train"))
        except FileNotFoundError:
            raise ValueError(f"data=imagefolder: no class folders in {root / 'train'}; {LAYOUT}") from None
        train = _class_split(root, "train", class_to_idx)
        return train, _class_split(root, "val", class_to_idx), classes, "train/<class> + val/<class>"
    loose = [e.name for e in os.scandir(root) if e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS)]
    if not loose:
        try:
            classes, class_to_idx = find_classes(str(root))
        except FileNotFoundError:
            classes, class_to_idx = [], {}
        samples = make_dataset(str(root), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
        if samples and all(os.path.dirname(path) == str(root / classes[label]) for path, label in samples):
            return *_holdout(samples, val_fraction, stratify=True), classes, "<class> folders, stratified val split"
    files = _files_under(root)
    if not files:
        raise ValueError(f"data=imagefolder: no images under {root}; {LAYOUT}")
    return (
        *_holdout([(path, -1) for path in files], val_fraction, stratify=False),
        [],
        "unlabelled images, random val split",
    )


DEGENERATE_MIN_SIDE, DEGENERATE_MEDIAN_FRACTION = 8, 1 / 8


def report_degenerate(samples: list[tuple[str, int]], short_sides: list[int], of: str = "") -> int:
    """Count and name (up to 3) the images whose short side is under 8 px or under 1/8 of the median: they are kept,
    squared up to the run's size like the rest, but are usually thumbnails or broken exports worth a look."""
    if not short_sides:
        return 0
    floor = max(DEGENERATE_MIN_SIDE, median(short_sides) * DEGENERATE_MEDIAN_FRACTION)
    small = [(path, side) for (path, _), side in zip(samples, short_sides, strict=True) if side < floor]
    if small:
        shown = ", ".join(f"{path} ({side} px)" for path, side in small[:3]) + (" ..." if len(small) > 3 else "")
        log.warning(
            "data=imagefolder: %d degenerate image(s)%s, short side under %.0f px: %s", len(small), of, floor, shown
        )
    return len(small)


def auto_size(short_sides: list[int]) -> int:
    low, high = AUTO_SIZE_BOUNDS
    return int(min(high, max(low, round(median(short_sides) / 8) * 8)))


def _stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    pixels = images[: min(len(images), 4096)].float().div_(255.0).transpose(0, 1).flatten(1)
    return tuple(pixels.mean(1).tolist()), tuple(pixels.std(1).clamp_min(1e-3).tolist())


@DATASETS.register("imagefolder")
def imagefolder(cfg: DataConfig) -> Splits:
    """Your own images: data.root=DIR with train/<class> + val/<class>, <class> folders, or no labels at all"""
    if cfg.root is None:
        raise ValueError(f"data=imagefolder needs data.root=DIR; {LAYOUT}")
    if cfg.cache not in CACHE_MODES:
        raise ValueError(f"data.cache={cfg.cache!r} is not one of: {', '.join(CACHE_MODES)}")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise ValueError(f"data.root={root} is not a directory; {LAYOUT}")
    train, val, classes, layout = discover(root, cfg.val_fraction)
    samples = train + val
    is_train = [i < len(train) for i in range(len(samples))]
    unreadable = Unreadable(root, len(samples), cfg.strict)
    # the size, the channels and the degenerate-image check read the headers of a bounded random sample, not of
    # every file: start-up does not grow with the tree
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0))[:HEADER_SAMPLE].sort().values
    sampled = [samples[i] for i in order.tolist()]
    headers = [
        h for h in _parallel(partial(_attempt, _header), [path for path, _ in sampled]) if not isinstance(h, str)
    ]
    channels = 1 if headers and all(h.gray for h in headers) else 3
    of = f" (headers of {len(sampled)} of {len(samples)} files)" if len(sampled) < len(samples) else ""
    report_degenerate(sampled, [h.short_side for h in headers] if len(headers) == len(sampled) else [], of)
    size = parse_image_size(cfg.image_size) or (auto_size([h.short_side for h in headers]) if headers else 32)
    footprint_mb = len(samples) * channels * size * size / 2**20
    cache = cfg.cache == "ram" or (cfg.cache == "auto" and footprint_mb <= cfg.cache_max_mb)
    if cache or cfg.strict:  # decode every file once now: kept in RAM, squared to the run's size, or (strict,
        # streamed) only to stop at the first unreadable one before training; a cached unreadable one is dropped
        if cache:
            read = lambda path: square_image(load_image(path, channels), size)  # noqa: E731
        else:
            read = lambda path: load_image(path, channels).shape  # noqa: E731
        results = _parallel(partial(_attempt, read), [path for path, _ in samples])
        kept = unreadable.keep(samples, results)
    else:  # streaming: no up-front decode; the loader skips an unreadable file and counts it
        kept = list(range(len(samples)))
    unreadable.report()
    parts = {part: [i for i in kept if is_train[i] == (part == "train")] for part in ("train", "val")}
    for part, indices in parts.items():
        if not indices:
            raise ValueError(f"data=imagefolder: no readable {part} images under {root}; {LAYOUT}")
    log.info(
        "data=imagefolder: %s under %s; %d train + %d val images (%s), %d channel(s), image_size %d%s; %s",
        layout,
        root,
        len(parts["train"]),
        len(parts["val"]),
        f"{len(classes)} classes" if classes else "no labels",
        channels,
        size,
        f" (auto: median short side{of})" if cfg.image_size == "auto" else "",
        f"decoded into RAM ({footprint_mb:.0f} MB)" if cache else f"streamed from disk (cache {cfg.cache})",
    )
    if cache:
        datasets = {
            part: TensorImages(
                torch.stack([results[i] for i in indices]), torch.tensor([samples[i][1] for i in indices])
            )
            for part, indices in parts.items()
        }
        mean, std = _stats(datasets["train"].images)
    else:
        # written by the loader's workers only when a file fails to decode
        skipped = os.path.join(tempfile.gettempdir(), f"sslrun-unreadable-{os.getpid()}-{uuid.uuid4().hex}.txt")
        datasets = {
            part: ImageFiles([samples[i] for i in indices], channels, not cfg.strict, skipped)
            for part, indices in parts.items()
        }
        mean, std = GRAY_STATS if channels == 1 else IMAGENET_STATS
    return Splits(
        train=datasets["train"],
        val=datasets["val"],
        num_classes=len(classes),
        channels=channels,
        mean=mean,
        std=std,
        image_size=size,
        in_memory=cache,
    )
