"""What every dataset builder returns (``Splits``), the in-memory dataset type, and the Lightning data module that
turns a ``DataConfig`` into SSL two-view, fine-tuning and evaluation loaders."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cached_property, partial
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, Subset
from torchvision.transforms.v2 import functional as TF

from sslrun.config import DataConfig
from sslrun.data import DATASETS
from sslrun.data.batched_views import BatchedSimCLRViews
from sslrun.data.recipes import parse_image_size, resolve_data
from sslrun.data.views import TWO_VIEWS, ViewSpec, eval_transform, finetune_view, multi_views

STAGES = ("pretrain", "finetune")
SPLIT_SEED = 0  # held-out splits use a fixed seed, independent of the run seed: every method sees the same split

log = logging.getLogger(__name__)


@dataclass
class Splits:
    """Datasets of (uint8 tensor (C, H, W), int label) items; label -1 where unknown (unlabelled pretraining data)."""

    train: Dataset
    val: Dataset
    num_classes: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pretrain: Dataset | None = None
    image_size: int | None = None  # the size ``data.image_size=auto`` resolves to (None: images vary, no default)
    in_memory: bool = True  # decoded uint8 tensors (cheap to index); ``data.views.batched=auto`` turns on for these


class TensorImages(Dataset):
    """Images held in memory: uint8 (N, C, H, W) (any strides, e.g. a permuted numpy view) and (N,) labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"expected uint8 (N, C, H, W) images and N labels, got {images.shape} {images.dtype}")
        self.images = images
        self.labels = labels.long()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index].contiguous(), int(self.labels[index])


class Transformed(Dataset):
    """Applies ``transform`` to the image of each (image, label) item of ``dataset``."""

    def __init__(self, dataset: Dataset, transform: Callable[[torch.Tensor], Any]) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.dataset[index]
        return self.transform(image), label


class _Deferred:
    """An iterator that makes the real one (``start()``) at the first ``next``."""

    def __init__(self, start: Callable[[], Iterator]) -> None:
        self.start, self.iterator = start, None

    def __iter__(self) -> _Deferred:
        return self

    def __next__(self) -> Any:
        if self.iterator is None:
            self.iterator = self.start()
        return next(self.iterator)


class DeferredLoader(DataLoader):
    """A ``DataLoader`` whose epoch iterator starts (draws the sampler's order, starts or wakes the workers, which
    prefetch at once) at the first batch, not when ``iter()`` is called. Lightning makes a resumed run's first
    iterator before it restores the epoch count and before it calls the sampler's ``set_epoch``: started then, the
    first resumed epoch would replay epoch 0's order (a stream's workers, too, take the epoch with them)."""

    def __iter__(self) -> Iterator:
        return _Deferred(self._start)

    def _start(self) -> Iterator:
        return DataLoader.__iter__(self)


def holdout(n: int, val_fraction: float, labels: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices of ``n`` items with ``data.val_fraction`` held out: seeded, stratified by ``labels``."""
    try:
        train, val = train_test_split(np.arange(n), test_size=val_fraction, stratify=labels, random_state=SPLIT_SEED)
    except ValueError as err:  # e.g. a class with a single image cannot be stratified
        raise ValueError(f"cannot hold out data.val_fraction={val_fraction}: {err}") from None
    return torch.from_numpy(train), torch.from_numpy(val)


def grayscale_splits(
    images: torch.Tensor, labels: torch.Tensor, val_fraction: float, num_classes: int, image_size: int
) -> Splits:
    """uint8 (N, 1, S, S) images held in memory, split by ``holdout`` (stratified); stats of the train split."""
    train_idx, val_idx = holdout(len(labels), val_fraction, labels.numpy())
    train_pixels = images[train_idx].float() / 255.0
    return Splits(
        train=TensorImages(images[train_idx], labels[train_idx]),
        val=TensorImages(images[val_idx], labels[val_idx]),
        num_classes=num_classes,
        channels=1,
        mean=(train_pixels.mean().item(),),
        std=(train_pixels.std().item(),),
        image_size=image_size,
    )


def square_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (C, H, W) -> (C, size, size): short side resized to ``size``, centre crop; already that size: as is."""
    if image.shape[-2:] == (size, size):
        return image
    return TF.center_crop(TF.resize(image, size, antialias=True), size)


def _spread(dataset: Dataset, limit: int | None) -> Dataset:
    """``limit`` items spread evenly over ``dataset`` (folders are stored class by class: the first N would be one
    class), always including the first."""
    if limit is None or limit >= len(dataset):
        return dataset
    return Subset(dataset, (torch.arange(limit) * len(dataset) // limit).tolist())


def limit_splits(splits: Splits, limit: int | None) -> Splits:
    """Keep ``limit`` evenly spaced items of every split (``data.limit``, for quick runs)."""
    if limit is not None and is_stream(splits.train):
        raise ValueError("data.limit is for map-style datasets; with data=webdataset give fewer shards in data.urls")
    pretrain = None if splits.pretrain is None else _spread(splits.pretrain, limit)
    return replace(splits, train=_spread(splits.train, limit), val=_spread(splits.val, limit), pretrain=pretrain)


def is_stream(dataset: Dataset | None) -> bool:
    """A dataset streamed in order (``ShardStream``), not indexed: its subsets, shuffling and DDP split are its own."""
    return isinstance(dataset, IterableDataset)


def split_labels(dataset: Dataset) -> torch.Tensor:
    """(N,) labels of a split, without decoding images where the dataset keeps them (``labels`` of ``TensorImages``
    and of imagefolder's file lists, also through a ``Subset``); any other dataset is read item by item."""
    if isinstance(dataset, Subset):
        return split_labels(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    labels = getattr(dataset, "labels", None)
    if labels is None:
        labels = [dataset[i][1] for i in range(len(dataset))]
    return torch.as_tensor(labels, dtype=torch.long)


def label_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded, class-stratified ``fraction`` of items with ``labels``: max(1, round(fraction *
    n_c)) of each class's n_c. One permutation (seeded by ``seed``) ranks all items and each class keeps its first,
    so at one seed every method gets the same subset, and a smaller fraction's subset lies inside a larger one's."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    ranked = labels[order]
    keep = [order[ranked == c][: max(1, round(fraction * int((ranked == c).sum())))] for c in ranked.unique()]
    return torch.cat(keep).sort().values


def unreadable_paths(log_file: str | None) -> dict[str, str]:
    """{path: reason} of the files a streamed dataset skipped so far (every worker's), from its ``unreadable_log``."""
    if not log_file or not os.path.exists(log_file):
        return {}
    with open(log_file) as f:
        return dict(line.rstrip("\n").split("\t", 1) for line in f if "\t" in line)


def _innermost(dataset: Dataset | None) -> Dataset | None:
    while dataset is not None and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    return dataset


def bounded_subset(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    """At most ``limit`` items of ``dataset``: a seeded, class-stratified subset (``label_subset`` at the fraction
    that gives ``limit``), or the dataset itself when it is no larger (or ``limit`` is None). A stream keeps the
    first ``limit`` of its samples (``sslrun shard`` writes them in a seeded random order)."""
    if limit is None or len(dataset) <= limit:
        return dataset
    if is_stream(dataset):
        return dataset.replace(limit=limit)
    keep = label_subset(split_labels(dataset), limit / len(dataset), seed)
    if len(keep) > limit:  # each class rounds up to at least one item
        drop = torch.randperm(len(keep), generator=torch.Generator().manual_seed(seed))[:limit]
        keep = keep[drop].sort().values
    return Subset(dataset, keep.tolist())


def check_label_fraction(cfg: DataConfig, stage: str) -> None:
    if stage == "pretrain" and cfg.label_fraction != 1.0:
        raise ValueError(
            f"data.label_fraction={cfg.label_fraction} is for sslrun finetune; pretraining uses no labels "
            "(leave it at 1.0)"
        )


class SSLDataModule(pl.LightningDataModule):
    """Builds the dataset named by ``cfg.name`` right away, so a missing or unreadable dataset fails before training.

    stage ``pretrain``: ``train_dataloader`` yields ((view1, view2, ...), labels), one view (B, C, s, s) per
    ``ViewSpec`` of ``views`` (the method's; default two SimCLR views at S = image_size).
    With ``views.batched`` it yields (uint8 images (B, C, S, S), labels) instead, and ``on_after_batch_transfer``
    (called by Lightning on the training device) or ``augment_batch`` turns that into the same (views, labels).
    stage ``finetune``: ``train_dataloader`` yields (images, labels) with light augmentation. With
    ``data.label_fraction`` < 1 the train split (its loaders, the kNN bank and the probe's training set) is the
    ``label_subset`` picked by ``seed`` (the run's); the val split is never reduced. ``seed`` also seeds the
    batched views (with the rank and the step).
    ``eval_dataloaders`` yields (images, labels) of the train and val splits with the deterministic eval transform.
    """

    def __init__(self, cfg: DataConfig, stage: str, views: Sequence[ViewSpec] = TWO_VIEWS, seed: int = 0) -> None:
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        check_label_fraction(cfg, stage)
        self.stage = stage
        self.view_specs = tuple(views)
        self._generator: torch.Generator | None = None
        self._seed = seed
        requested = parse_image_size(cfg.image_size)
        self.splits = limit_splits(DATASETS.get(cfg.name)(cfg), cfg.limit)
        if stage == "finetune" and self.splits.num_classes == 0:
            raise ValueError(
                f"sslrun finetune needs labels, and data.root={cfg.root} has none: give it class folders "
                "(ROOT/<class>/* or ROOT/train/<class>/* + ROOT/val/<class>/*)"
            )
        size = requested or self.splits.image_size
        if size is None:
            raise ValueError(f"data={cfg.name}: images of differing sizes; set data.image_size=<pixels>")
        self.cfg = resolve_data(cfg, size, self.splits.in_memory)
        low_shot = stage == "finetune" and cfg.label_fraction < 1.0
        if low_shot and is_stream(self.splits.train):
            raise ValueError(
                f"data.label_fraction={cfg.label_fraction} needs an indexed dataset; data={cfg.name} is streamed "
                "(use data=imagefolder on the source tree)"
            )
        if low_shot:
            train = self.splits.train
            subset = label_subset(split_labels(train), cfg.label_fraction, seed)
            self.splits = replace(self.splits, train=Subset(train, subset.tolist()))
        source = self._train_source
        at = f" at data.label_fraction={cfg.label_fraction}" if low_shot else ""
        if len(source) < cfg.batch_size and stage == "finetune":  # a probe needs no full batches: a smaller one
            log.warning(
                "data.batch_size=%d is larger than the %d training images of data=%s%s: finetuning with batches of %d",
                cfg.batch_size,
                len(source),
                cfg.name,
                at,
                len(source),
            )
            self.cfg.batch_size = len(source)
        elif len(source) < cfg.batch_size:
            raise ValueError(
                f"data.batch_size={cfg.batch_size} is larger than the {len(source)} training images of "
                f"data={cfg.name}{at}; lower data.batch_size (every training batch is full-sized)"
            )

    @property
    def num_classes(self) -> int:
        return self.splits.num_classes

    @property
    def channels(self) -> int:
        return self.splits.channels

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    @property
    def _train_source(self) -> Dataset:
        pretrain = self.splits.pretrain
        return pretrain if self.stage == "pretrain" and pretrain is not None else self.splits.train

    @property
    def batched(self) -> bool:
        """Pretraining views are made on the training device, a batch at a time (``data.views.batched``)."""
        return self.stage == "pretrain" and self.cfg.views.batched

    @cached_property
    def _batched_views(self) -> BatchedSimCLRViews:
        s = self.splits
        return BatchedSimCLRViews(self.cfg.views, self.image_size, s.mean, s.std, self.view_specs)

    def augment_batch(
        self, batch: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator | None = None
    ) -> tuple[tuple[torch.Tensor, ...], Any]:
        """(uint8 images (B, C, S, S), labels) -> ((view1, view2, ...), labels), views float (B, C, s, s)
        normalised, made on the images' device; for loops outside Lightning over a ``batched`` pretraining loader."""
        images, labels = batch
        return self._batched_views(images, generator), labels

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if not self.batched:
            return batch
        return self.augment_batch(batch, self._step_generator(batch[0].device))

    def _step_generator(self, device: torch.device) -> torch.Generator:
        """Augmentation randomness seeded by (run seed, rank, step): ``seed_everything`` seeds every DDP rank alike,
        so the global RNG would give all ranks the same crops and jitter for their (different) images; and a run
        resumed from a checkpoint draws what the uninterrupted run drew at each step."""
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device)
        rank, step = (self.trainer.global_rank, self.trainer.global_step) if self.trainer is not None else (0, 0)
        return self._generator.manual_seed(self._seed + 7919 * rank + 1_000_003 * step)

    def _train_transform(self) -> Callable[[torch.Tensor], Any]:
        s = self.splits
        if self.batched:  # views are made on the device; the loader only squares the images to the run's size
            return partial(square_image, size=self.image_size)
        if self.stage == "pretrain":
            return multi_views(self.cfg.views, self.image_size, s.channels, s.mean, s.std, self.view_specs)
        return finetune_view(self.cfg.views, self.image_size, s.mean, s.std)

    def train_dataloader(self) -> DataLoader:
        # Full batches only: an uneven last batch stalls DDP and breaks batch statistics.
        return self._loader(self._train_source, shuffle=True, drop_last=True, transform=self._train_transform())

    def eval_dataloaders(self) -> tuple[DataLoader, DataLoader]:
        """(train, val) loaders with the eval transform, in dataset order; built once so workers persist."""
        return self._eval_loaders

    def unreadable_images(self) -> dict[str, str]:
        """{path: reason} of the images the loaders skipped so far because they failed to decode (streamed data)."""
        logs = {getattr(_innermost(d), "unreadable_log", None) for d in (self.splits.train, self.splits.val)}
        return {path: why for log_file in logs for path, why in unreadable_paths(log_file).items()}

    def bound_evaluation(self, max_train: int | None, max_val: int | None) -> dict[str, int]:
        """Evaluation (``eval_dataloaders``: the kNN monitor, RankMe, ``finetune``'s features) on at most
        ``max_train`` / ``max_val`` images of each split (``eval.max_train_images``, ``eval.max_val_images``): seeded,
        class-stratified subsets, so its cost does not grow with the dataset. Returns the image counts used and says
        them in the log when a split was cut."""
        if "_eval_loaders" in self.__dict__:
            raise RuntimeError("bound_evaluation must come before the first eval_dataloaders()")
        counts = {}
        for name, limit in (("train", max_train), ("val", max_val)):
            split = getattr(self.splits, name)
            subset = bounded_subset(split, limit, self._seed)
            self._eval_splits[name] = subset
            counts[f"eval_{name}_images"] = len(subset)
            if len(subset) < len(split):
                log.info(
                    "evaluation uses %d of the %d %s images (eval.max_%s_images=%d; null for all)",
                    len(subset),
                    len(split),
                    name,
                    name,
                    limit,
                )
        return counts

    @cached_property
    def _eval_splits(self) -> dict[str, Dataset]:
        return {"train": self.splits.train, "val": self.splits.val}

    @property
    def eval_shard(self) -> tuple[int, int]:
        """(rank, world size) of this process: under DDP each rank embeds the items rank, rank + world, ... of each
        eval split (``gather_features`` puts the rows back in dataset order), and reads its own shards of a stream."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    @cached_property
    def _eval_loaders(self) -> tuple[DataLoader, DataLoader]:
        transform = eval_transform(self.image_size, self.splits.mean, self.splits.std)
        rank, world = self.eval_shard
        loaders = []
        for name in ("train", "val"):
            split = self._eval_splits[name]
            if world > 1 and not is_stream(split):  # a stream splits itself by shard
                split = Subset(split, range(rank, len(split), world))
            loaders.append(self._loader(split, shuffle=False, drop_last=False, transform=transform))
        return tuple(loaders)

    def _epoch(self) -> int:
        """The epoch Lightning hands a sampler's ``set_epoch`` (its count of epochs begun): a run resumed from an
        epoch-end checkpoint starts its iterator before ``current_epoch`` catches up."""
        return self.trainer.fit_loop.epoch_progress.current.processed if self.trainer is not None else 0

    def _loader(
        self,
        dataset: Dataset,
        shuffle: bool,
        drop_last: bool,
        transform: Callable[[torch.Tensor], Any],
    ) -> DataLoader:
        """A loader of ``transform``ed items. A stream shuffles (seeded by the run seed and the epoch, with a
        ``data.shuffle_buffer``) and splits itself over ranks and workers; its workers are made for each epoch."""
        if is_stream(dataset):
            stream = dataset.replace(
                transform=transform,
                shuffle=shuffle,
                drop_last=drop_last,
                batch_size=self.cfg.batch_size,
                seed=self._seed,
                buffer=self.cfg.shuffle_buffer,
            )
            from sslrun.data.shards import stream_loader

            return stream_loader(stream, self._epoch, lambda: self.eval_shard, self.cfg.num_workers)
        dataset = Transformed(dataset, transform)
        workers = self.cfg.num_workers
        rank, world = self.eval_shard
        sampler = None
        if shuffle and world > 1:
            # Lightning's own DistributedSampler pads the dataset to a multiple of the world size by repeating
            # samples, so an uneven split trains some twice per epoch; drop_last=True drops that tail instead
            sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=self._seed, drop_last=True)
        return DeferredLoader(
            dataset,
            batch_size=self.cfg.batch_size,
            shuffle=shuffle if sampler is None else False,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )
