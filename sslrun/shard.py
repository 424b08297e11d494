"""``sslrun shard SRC OUT``: an image folder (any layout ``data=imagefolder`` reads) -> WebDataset shards
``OUT/{train,val}-NNNNNN.tar`` and ``OUT/index.json``, for ``sslrun pretrain data=webdataset data.root=OUT``.

Samples are written in a seeded random order, so any prefix of the shards is a random sample (evaluation's bounded
subsets take one). Every file is decoded once to check it (unreadable ones are counted and left out); with
``--resize S`` images whose short side is larger are resized to S and written as JPEG (quality 90), the usual way
to make a 224 px pipeline cheap to decode. The index is written last: a folder without one is an unfinished run."""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median

import torch
from PIL import Image
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from sslrun import console
from sslrun.data.shards import FORMAT, IMAGE_KEYS, INDEX, LABEL_KEY

log = logging.getLogger(__name__)
SIZE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)b?", text.strip().lower())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 500M, 1G, 1048576)")
    return int(float(match[1]) * SIZE_UNITS[match[2]])


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sslrun shard",
        description="Write an image folder as WebDataset shards with an index.json (for data=webdataset).",
    )
    parser.add_argument("src", metavar="SRC", help="image folder: train/<class> + val/<class>, <class>/, or images")
    parser.add_argument("out", metavar="OUT", help="output folder (refused when not empty, unless --force)")
    parser.add_argument("--max-count", type=positive, default=10000, help="samples per shard at most (10000)")
    parser.add_argument("--max-size", type=parse_size, default=parse_size("1G"), help="bytes per shard at most (1G)")
    parser.add_argument("--resize", type=positive, help="resize images with a larger short side to this (JPEG q90)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="held out when SRC has no val/ (0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample order (0)")
    parser.add_argument("--force", action="store_true", help="replace the shards and index already in OUT")
    return parser.parse_args(argv)


def encode(path: str, resize: int | None) -> tuple[str, bytes, int, bool] | str:
    """(member suffix, bytes, short side, grayscale) of the image at ``path`` after a full decode, or the reason
    it is unreadable."""
    from sslrun.data.imagefolder import GRAY_MODES

    try:
        with open(path, "rb") as f:
            data = f.read()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            gray, side = image.mode in GRAY_MODES, min(image.size)
            suffix = (image.format or Path(path).suffix.lstrip(".")).lower().replace("jpeg", "jpg")
            if (resize is not None and side > resize) or suffix not in IMAGE_KEYS:
                from sslrun.data.imagefolder import to_mode

                scale = min(1.0, resize / side) if resize is not None else 1.0
                small = to_mode(image, 1 if gray else 3)
                if scale < 1.0:
                    width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
                    small = small.resize((width, height), Image.BICUBIC)
                buffer = io.BytesIO()
                small.save(buffer, format="JPEG" if scale < 1.0 else "PNG", quality=90)  # another format: PNG
                return ("jpg" if scale < 1.0 else "png"), buffer.getvalue(), min(small.size), gray
        return suffix, data, side, gray
    except Exception as err:  # any decoder failure: the file is unreadable
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def prepare_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        console.fail(f"OUT={out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            console.fail(f"OUT={out} is not empty; give an empty or new folder, or --force to replace its shards")
        for entry in out.iterdir():
            if entry.name == INDEX or re.fullmatch(r"(train|val)-\d{6}\.tar", entry.name):
                entry.unlink()
    out.mkdir(parents=True, exist_ok=True)


def write_split(
    name: str,
    samples: list[tuple[str, int]],
    out: Path,
    args: argparse.Namespace,
    progress: Progress,
    labelled: bool,
    stats: dict,
) -> dict:
    from webdataset import TarWriter

    task = progress.add_task(name, total=len(samples))
    shards, per_class, tar, count, size = [], Counter(), None, 0, 0

    def close() -> None:
        if tar is not None:
            tar.close()
            shards.append({"url": f"{name}-{len(shards):06d}.tar", "count": count})

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for (path, label), result in zip(samples, pool.map(lambda s: encode(s[0], args.resize), samples), strict=True):
            progress.advance(task)
            if isinstance(result, str):
                stats["unreadable"].append((path, result))
                continue
            suffix, data, side, gray = result
            if tar is None or count >= args.max_count or (count and size + len(data) > args.max_size):
                close()
                tar, count, size = TarWriter(str(out / f"{name}-{len(shards):06d}.tar"), encoder=False), 0, 0
            sample = {"__key__": f"{sum(s['count'] for s in shards) + count:09d}", suffix: data}
            if labelled:
                sample[LABEL_KEY] = str(label).encode()
                per_class[label] += 1
            tar.write(sample)
            count, size = count + 1, size + len(data) + 1024
            stats["sides"].append(side)
            stats["gray"].append(gray)
    close()
    return {"count": sum(s["count"] for s in shards), "per_class": dict(sorted(per_class.items())), "shards": shards}


def main(argv: list[str]) -> None:
    from sslrun.data.imagefolder import LAYOUT, discover

    args = parse(argv)
    src, out = Path(args.src).expanduser(), Path(args.out).expanduser()
    if not src.is_dir():
        console.fail(f"SRC={src} is not a directory; {LAYOUT}")
    if not 0 < args.val_fraction < 1:
        console.fail(f"--val-fraction={args.val_fraction} must lie in (0, 1)")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        console.fail(f"OUT={out} lies inside SRC={src}; write the shards elsewhere")
    try:
        train, val, classes, layout = discover(src, args.val_fraction)
    except (ValueError, PermissionError) as err:
        console.fail(str(err))
    prepare_out(out, args.force)
    g = torch.Generator().manual_seed(args.seed)
    labelled = bool(classes)
    stats = {"unreadable": [], "sides": [], "gray": []}
    start = time.perf_counter()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    splits = {}
    with Progress(*columns, console=console.console) as progress:
        for name, samples in (("train", train), ("val", val)):
            order = torch.randperm(len(samples), generator=g).tolist()
            splits[name] = write_split(name, [samples[i] for i in order], out, args, progress, labelled, stats)
    for name, split in splits.items():
        if split["count"] == 0:
            console.fail(f"no readable {name} images under {src} ({len(stats['unreadable'])} unreadable)")
    for split in splits.values():
        split["per_class"] = {classes[c]: n for c, n in split["per_class"].items()}
    index = {
        "format": FORMAT,
        "source": str(src.resolve()),
        "layout": layout,
        "classes": classes,
        "channels": 1 if all(stats["gray"]) else 3,
        "image_size": {"median_short_side": int(median(stats["sides"])), "resized_to": args.resize},
        "seed": args.seed,
        "unreadable": len(stats["unreadable"]),
        "splits": splits,
    }
    (out / INDEX).write_text(json.dumps(index, indent=1) + "\n")
    seconds = time.perf_counter() - start
    written = sum(s["count"] for s in splits.values())
    console.console.print(
        f"wrote {written} images ({layout}) as {sum(len(s['shards']) for s in splits.values())} shards + {INDEX} "
        f"to {escape(str(out))} in {seconds:.1f} s; train {splits['train']['count']}, val {splits['val']['count']}",
        highlight=False,
    )
    if stats["unreadable"]:
        path, why = stats["unreadable"][0]
        console.console.print(
            f"left out {len(stats['unreadable'])} unreadable file(s) (first: {escape(path)}: {escape(why)})",
            highlight=False,
        )
    console.console.print(
        f"train on them: sslrun pretrain data=webdataset data.root={escape(str(out))}", highlight=False
    )
