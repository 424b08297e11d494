"""WebDataset shards: ``data=webdataset``, tar files of images (``KEY.jpg``, ``KEY.png``, ...) with optional
``KEY.cls`` labels, as ``sslrun shard`` writes them (with an ``index.json``) or as OpenCLIP/DataComp tools do.

The tar reading is the ``webdataset`` library's; the split of an epoch is ours, because it has to be exact. Each
epoch the shards are permuted (seeded by the run seed and the epoch, the same on every rank), rank r takes shards
r, r + W, ... and its loader worker k of K takes every K-th of those: no sample is read twice in an epoch, and
nothing is read by two processes. Every (rank, worker) knows every shard's sample count (from the index), so each
can work out, without talking to the others, a quota of whole batches for itself such that every rank yields the
same number of batches (DDP needs that): the epoch is the most full batches the smallest rank can make. A member
that fails to decode is skipped and counted; the worker then reads on (past its quota, then from its first shard
again) so the quota still fills.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import tarfile
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from sslrun.data import DATASETS
from sslrun.data.base import DeferredLoader, Splits, square_image
from sslrun.data.recipes import parse_image_size

log = logging.getLogger(__name__)
# Lightning warns that an IterableDataset's __len__ may be wrong with several workers; ours is exact by design
warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")

INDEX = "index.json"
FORMAT = "sslrun-shards/1"
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm", "tif", "tiff")
LABEL_KEY = "cls"


@dataclass(frozen=True)
class Shard:
    url: str
    count: int


def _is_local(url: str) -> bool:
    return "://" not in url and not url.startswith("pipe:")


def decode(data: bytes, channels: int) -> torch.Tensor:
    """Image file bytes -> uint8 (channels, H, W)."""
    from sslrun.data.imagefolder import to_mode

    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(to_mode(image, channels)).copy()
    tensor = torch.from_numpy(pixels)
    return tensor.unsqueeze(0) if channels == 1 else tensor.permute(2, 0, 1)


def image_member(sample: dict[str, Any]) -> bytes | None:
    for key in IMAGE_KEYS:
        if key in sample:
            return sample[key]
    return None


def read_samples(url: str, handler: Callable[[Exception], bool]) -> Iterator[dict[str, Any]]:
    """The samples (dicts of member suffix -> bytes, plus ``__key__``) of one shard, through ``webdataset``."""
    from webdataset.tariterators import tarfile_samples

    return tarfile_samples([{"url": url}], handler=handler)


def _plan_batches(counts: list[list[int]], unit: int) -> list[list[int]]:
    """Whole ``unit``s (batches) each (rank, worker) yields, from the samples each can read (``counts[r][k]``): as
    many as the smallest rank can make, the same total on every rank; a rank with more gives up its surplus from its
    largest workers first."""
    batches = [[c // unit for c in rank] for rank in counts]
    epoch = min(sum(rank) for rank in batches)
    for rank in batches:
        while sum(rank) > epoch:
            rank[max(range(len(rank)), key=lambda k: (rank[k], -k))] -= 1
    return batches


class ShardStream(IterableDataset):
    """(uint8 image (C, S, S) or ``transform(image)``, label) samples streamed from ``shards``.

    ``rank``/``world`` and ``workers`` (the loader's ``num_workers``) must be set before iterating, ``epoch`` at each
    epoch (``StreamLoader`` does both). ``drop_last`` (training): every rank yields the same number of full
    ``batch_size`` batches. Otherwise (evaluation) everything, or at most ``limit`` samples over all ranks, each
    rank taking its shards' share."""

    def __init__(
        self,
        shards: list[Shard],
        channels: int,
        size: int,
        *,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        buffer: int = 1000,
        limit: int | None = None,
        transform: Callable[[torch.Tensor], Any] | None = None,
        skip_log: str | None = None,
        strict: bool = False,
    ) -> None:
        self.shards = shards
        self.channels, self.size = channels, size
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.buffer, self.limit = seed, buffer, limit
        self.transform = transform
        self.unreadable_log, self.strict = skip_log, strict
        self.rank, self.world, self.workers, self.epoch = 0, 1, 0, 0

    def replace(self, **changes: Any) -> ShardStream:
        new = copy.copy(self)
        for key, value in changes.items():
            if not hasattr(new, key):
                raise AttributeError(key)
            setattr(new, key, value)
        return new

    @property
    def total(self) -> int:
        """Samples in all the shards."""
        return sum(s.count for s in self.shards)

    def _order(self) -> list[Shard]:
        if not self.shuffle:
            return list(self.shards)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return [self.shards[i] for i in torch.randperm(len(self.shards), generator=g).tolist()]

    def assignment(self) -> tuple[list[list[list[Shard]]], list[list[int]]]:
        """(shards of each (rank, worker), samples each yields) for the current epoch."""
        order, workers = self._order(), max(1, self.workers)
        shards = [[order[r :: self.world][k::workers] for k in range(workers)] for r in range(self.world)]
        counts = [[sum(s.count for s in mine) for mine in rank] for rank in shards]
        if self.drop_last:
            quota = [[b * self.batch_size for b in rank] for rank in _plan_batches(counts, self.batch_size)]
        elif self.limit is not None and self.limit < self.total:
            share = self.limit / self.total
            quota = [[int(c * share) for c in rank] for rank in counts]
        else:
            quota = counts
        return shards, quota

    def __len__(self) -> int:
        return sum(self.assignment()[1][self.rank])

    def __iter__(self) -> Iterator[tuple[Any, int]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        if info is not None and max(1, self.workers) != info.num_workers:
            raise RuntimeError(f"ShardStream.workers={self.workers} but the loader has {info.num_workers} workers")
        shards, quota = self.assignment()
        mine, wanted = shards[self.rank][worker], quota[self.rank][worker]
        if wanted == 0:
            return
        g = torch.Generator().manual_seed(self.seed + 7919 * self.rank + 104_729 * worker + 1_000_003 * self.epoch)
        yielded = 0
        while True:  # one pass over this worker's shards; another only when unreadable members left it short
            before = yielded
            for image, label in self._shuffled(self._decoded(mine), g):
                yield (image if self.transform is None else self.transform(image)), label
                yielded += 1
                if yielded == wanted:
                    return
            if yielded == before:
                raise ValueError(f"data=webdataset: no readable image in {', '.join(s.url for s in mine)}")

    def _shuffled(self, samples: Iterator[tuple[torch.Tensor, int]], g: torch.Generator) -> Iterator:
        if not self.shuffle or self.buffer <= 1:
            yield from samples
            return
        pool: list = []
        for sample in samples:
            if len(pool) < self.buffer:
                pool.append(sample)
                continue
            i = int(torch.randint(len(pool), (1,), generator=g))
            yield pool[i]
            pool[i] = sample
        while pool:
            yield pool.pop(int(torch.randint(len(pool), (1,), generator=g)))

    def _decoded(self, shards: list[Shard]) -> Iterator[tuple[torch.Tensor, int]]:
        for shard in shards:
            for sample in read_samples(shard.url, self._on_tar_error):
                item = self._decode(sample)
                if item is not None:
                    yield item

    def _decode(self, sample: dict[str, Any]) -> tuple[torch.Tensor, int] | None:
        where = f"{sample.get('__url__')}:{sample.get('__key__')}"
        data = image_member(sample)
        try:
            if data is None:
                raise ValueError(f"no image member ({', '.join(IMAGE_KEYS)})")
            image = square_image(decode(data, self.channels), self.size)
            label = int(sample[LABEL_KEY].decode().strip()) if LABEL_KEY in sample else -1
        except Exception as err:  # any decoder failure: skip the member, count it
            if self.strict:
                raise ValueError(f"data=webdataset: cannot read {where} ({err}); pass data.strict=false") from None
            self._record(where, f"{type(err).__name__}: {err}")
            return None
        return image, label

    def _on_tar_error(self, err: Exception) -> bool:
        if self.strict:
            return False
        self._record(str(err.args[-1]) if err.args else "?", f"{type(err).__name__}: {err.args[0] if err.args else ''}")
        return True

    def _record(self, where: str, reason: str) -> None:
        if self.unreadable_log:
            with open(self.unreadable_log, "a") as f:
                f.write(f"{where}\t{reason.splitlines()[0] if reason else ''}\n")


class StreamLoader(DeferredLoader):
    """A loader of a ``ShardStream`` that hands it the epoch (``epoch_fn()``) and the process's (rank, world)
    (``shard_fn()``) when an epoch's first batch is asked for; its workers are made afresh for every epoch."""

    def __init__(
        self,
        dataset: ShardStream,
        epoch_fn: Callable[[], int],
        shard_fn: Callable[[], tuple[int, int]],
        **kwargs: Any,
    ) -> None:
        dataset.workers = kwargs.get("num_workers", 0)
        super().__init__(dataset, **kwargs)
        self.epoch_fn, self.shard_fn = epoch_fn, shard_fn
        self._sync()

    def _sync(self) -> None:
        self.dataset.epoch = self.epoch_fn()
        self.dataset.rank, self.dataset.world = self.shard_fn()

    def __len__(self) -> int:
        self._sync()
        return super().__len__()

    def _start(self) -> Iterator:
        self._sync()
        return super()._start()


def stream_loader(
    stream: ShardStream, epoch_fn: Callable[[], int], shard_fn: Callable[[], tuple[int, int]], num_workers: int
) -> StreamLoader:
    """A ``StreamLoader`` with no more workers than this rank has shards (a worker without one would idle)."""
    rank, world = shard_fn()
    mine = len(stream.shards[rank::world])
    if mine == 0 and stream.drop_last:  # in evaluation a process without a shard embeds nothing
        raise ValueError(
            f"data=webdataset: {len(stream.shards)} shard(s) for {world} processes; every process needs one "
            "(write more, smaller shards: sslrun shard --max-count)"
        )
    return StreamLoader(
        stream,
        epoch_fn,
        shard_fn,
        batch_size=stream.batch_size,
        drop_last=stream.drop_last,
        num_workers=min(num_workers, max(1, mine)),
        pin_memory=torch.cuda.is_available(),
    )


# ---- finding the shards and their sample counts -------------------------------------------------------------


def load_index(directory: str) -> dict[str, Any] | None:
    path = os.path.join(directory, INDEX)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        index = json.load(f)
    if index.get("format") != FORMAT:
        raise ValueError(f"data=webdataset: {path} is not an index written by sslrun shard (format {FORMAT})")
    return index


def expand(urls: str) -> list[str]:
    from webdataset.shardlists import expand_urls

    return list(expand_urls(urls))


def _attempt_header(data: bytes) -> tuple[int, bool] | None:
    """(short side, grayscale) from an image's header, or None when it cannot be read."""
    from sslrun.data.imagefolder import GRAY_MODES

    try:
        with Image.open(io.BytesIO(data)) as image:
            return min(image.size), image.mode in GRAY_MODES
    except Exception:  # any decoder failure
        return None


@dataclass
class Scanned:
    shards: list[Shard]
    labelled: bool
    num_classes: int
    channels: int
    short_sides: list[int]


def scan(urls: list[str], what: str, header_sample: int = 200) -> Scanned:
    """Sample counts, labels and a few image headers of local shards without an index: one pass over the tar
    headers (the members' data is skipped, except the small labels and the first ``header_sample`` images)."""
    shards, with_label, without_label, max_label, gray, sides = [], 0, 0, -1, [], []
    for url in urls:
        if not _is_local(url):
            raise ValueError(
                f"data=webdataset: {url} is remote and has no {INDEX} beside it; the sample counts come from the "
                "index (write the shards with sslrun shard, or copy them locally)"
            )
        if not os.path.isfile(url):
            raise ValueError(f"data=webdataset: {what} shard {url} does not exist")
        keys: dict[str, set[str]] = {}
        try:
            with tarfile.open(url) as tar:
                for member in tar:
                    if not member.isreg() or "." not in os.path.basename(member.name):
                        continue
                    base, _, suffix = member.name.partition(".")
                    suffix = suffix.lower()
                    keys.setdefault(base, set()).add(suffix)
                    if suffix == LABEL_KEY:
                        max_label = max(max_label, int(tar.extractfile(member).read().decode().strip()))
                    elif suffix in IMAGE_KEYS and len(sides) < header_sample:
                        header = _attempt_header(tar.extractfile(member).read())
                        if header is not None:  # an unreadable member is counted when the loader meets it
                            sides.append(header[0])
                            gray.append(header[1])
        except (tarfile.TarError, OSError) as err:
            raise ValueError(f"data=webdataset: {url} is not a readable tar file ({err})") from None
        except ValueError as err:
            raise ValueError(f"data=webdataset: {url} has a .cls member that is not an integer ({err})") from None
        images = [k for k, suffixes in keys.items() if suffixes & set(IMAGE_KEYS)]
        if not images:
            raise ValueError(f"data=webdataset: {what} shard {url} holds no images (members KEY.jpg, KEY.png, ...)")
        labelled = sum(LABEL_KEY in keys[k] for k in images)
        with_label += labelled
        without_label += len(images) - labelled
        shards.append(Shard(url, len(images)))
    if with_label and without_label:
        raise ValueError(
            f"data=webdataset: {with_label} {what} samples have a .cls label and {without_label} have none; "
            "label all of them or none"
        )
    return Scanned(shards, with_label > 0, max_label + 1, 1 if gray and all(gray) else 3, sides)


# ---- data=webdataset ----------------------------------------------------------------------------------------

LAYOUT = (
    "give data.root=DIR (shards and the index.json written by `sslrun shard SRC DIR`) or "
    'data.urls="DIR/train-{000000..000009}.tar" (and data.val_urls)'
)


def _indexed(index: dict[str, Any], directory: str, split: str) -> list[Shard]:
    return [Shard(os.path.join(directory, s["url"]), int(s["count"])) for s in index["splits"][split]["shards"]]


def _expanded(pattern: str, what: str) -> list[str]:
    urls = expand(pattern)
    missing = [u for u in urls if _is_local(u) and not os.path.isfile(u)]
    if missing and len(missing) == len(urls):
        raise ValueError(f"data.{what}={pattern} matches no file ({missing[0]} does not exist)")
    if missing:
        raise ValueError(
            f"data.{what}={pattern}: {len(missing)} of {len(urls)} shards do not exist (first: {missing[0]})"
        )
    return urls


def _index_counts(urls: list[str]) -> tuple[dict[str, Any], list[Shard]] | None:
    """The index beside the shards and their counts from it, when it lists every one of them."""
    directory = os.path.dirname(urls[0])
    index = load_index(directory) if _is_local(urls[0]) else None
    if index is None:
        return None
    known = {os.path.join(directory, s["url"]): int(s["count"]) for p in index["splits"].values() for s in p["shards"]}
    return (index, [Shard(u, known[u]) for u in urls]) if all(u in known for u in urls) else None


def _index_stats(index: dict[str, Any]) -> tuple[int, int, list[int]]:
    return len(index["classes"]), int(index["channels"]), [int(index["image_size"]["median_short_side"])]


def webdataset_splits(cfg: Any) -> tuple[list[Shard], list[Shard], int, int, list[int], str]:
    """(train shards, val shards, classes, channels, short sides, where the counts came from) for
    ``data=webdataset``: the index written by ``sslrun shard``, else one scan of the tar headers."""
    if cfg.urls is None:
        if cfg.root is None:
            raise ValueError(f"data=webdataset needs shards: {LAYOUT}")
        root = os.path.expanduser(cfg.root)
        if not os.path.isdir(root):
            raise ValueError(f"data.root={root} is not a directory; {LAYOUT}")
        index = load_index(root)
        if index is None:
            tars = sorted(f for f in os.listdir(root) if f.endswith(".tar"))
            hint = " (it has .tar files: sslrun shard may not have finished)" if tars else ""
            raise ValueError(f"data=webdataset: no {INDEX} in {root}{hint}; {LAYOUT}")
        directory = root
        train_urls = [os.path.join(directory, s["url"]) for s in index["splits"]["train"]["shards"]]
        val_urls = [os.path.join(directory, s["url"]) for s in index["splits"]["val"]["shards"]]
    else:
        train_urls = _expanded(cfg.urls, "urls")
    if cfg.val_urls is not None:
        val_urls = _expanded(cfg.val_urls, "val_urls")
    elif cfg.urls is not None:
        if len(train_urls) < 2:
            raise ValueError(
                f"data=webdataset: data.urls={cfg.urls} is one shard and there is no data.val_urls; give validation "
                "shards (sslrun shard writes val-*.tar) or more train shards (the last ones are held out)"
            )
        held = max(1, round(cfg.val_fraction * len(train_urls)))
        train_urls, val_urls = train_urls[:-held], train_urls[-held:]
        log.info("data=webdataset: no data.val_urls; the last %d of the shards are held out for validation", held)
    counted = _index_counts(train_urls), _index_counts(val_urls)
    if counted[0] is not None and counted[1] is not None and counted[0][0] == counted[1][0]:
        classes, channels, sides = _index_stats(counted[0][0])
        return counted[0][1], counted[1][1], classes, channels, sides, INDEX
    train, val = scan(train_urls, "train"), scan(val_urls, "val")
    if train.labelled != val.labelled:
        raise ValueError("data=webdataset: the train shards have .cls labels and the val shards not (or the reverse)")
    classes = max(train.num_classes, val.num_classes) if train.labelled else 0
    channels = 1 if train.channels == val.channels == 1 else 3
    return train.shards, val.shards, classes, channels, train.short_sides + val.short_sides, "a scan of the tars"


@DATASETS.register("webdataset")
def webdataset(cfg: Any) -> Splits:
    """WebDataset shards, streamed: data.root=DIR from `sslrun shard`, or data.urls="DIR/train-{000000..000009}.tar\""""
    from sslrun.data.imagefolder import GRAY_STATS, IMAGENET_STATS, auto_size

    train, val, classes, channels, sides, source = webdataset_splits(cfg)
    size = parse_image_size(cfg.image_size) or (auto_size(sides) if sides else 32)
    skipped = os.path.join(tempfile.gettempdir(), f"sslrun-unreadable-{os.getpid()}-{uuid.uuid4().hex}.txt")
    streams = [
        ShardStream(
            shards,
            channels,
            size,
            batch_size=cfg.batch_size,
            shuffle=False,
            drop_last=False,
            skip_log=skipped,
            strict=cfg.strict,
        )
        for shards in (train, val)
    ]
    log.info(
        "data=webdataset: %d train shards (%d images) + %d val shards (%d images), counted from %s; %s, %d "
        "channel(s), image_size %d%s; streamed (shuffle buffer %d)",
        len(train),
        streams[0].total,
        len(val),
        streams[1].total,
        source,
        f"{classes} classes" if classes else "no labels",
        channels,
        size,
        " (auto: median short side)" if cfg.image_size == "auto" else "",
        cfg.shuffle_buffer,
    )
    mean, std = GRAY_STATS if channels == 1 else IMAGENET_STATS
    return Splits(
        train=streams[0],
        val=streams[1],
        num_classes=classes,
        channels=channels,
        mean=mean,
        std=std,
        image_size=size,
        in_memory=False,
    )
