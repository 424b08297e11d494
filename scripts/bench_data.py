"""Data loading on generated trees, as JSON lines.

Start-up (default): how long building ``data=imagefolder`` takes (the directory walk, the header sample, the split)
for trees of N small images, streamed (``data.cache=none``). The growth from the smallest to the largest tree is the
figure to watch (the walk is linear, nothing else should be).

    python scripts/bench_data.py --sizes 10000 100000 --trees runs/data/bench [--results results/data_startup.jsonl]

A tree is written once under ``--trees`` (``<N>/<class>/<i>.png``, 10 classes of 32 px grayscale PNGs) and reused.

Throughput (``--loader``): images/s of a pretraining loader (decode + two SimCLR views, the recipe of the size) over
an epoch (best of ``--repeats``, in alternating order) of a tree of RGB JPEGs at 64 and 224 px, for the streamed
folder (``data=imagefolder data.cache=none``), its shards (``sslrun shard``, ``data=webdataset``) and the reference,
torchvision's ``ImageFolder`` + ``DataLoader`` with the same views, at 0, 1 and 2 loader workers; ``ratio`` is ours
over the reference at equal workers. Then the resident memory of the main process after each of 3 epochs of the
streamed folder (0 workers: everything in it).

    python scripts/bench_data.py --loader --trees runs/data/bench [--results results/data_loader.jsonl]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from PIL import Image
from provenance import append_row, provenance, this_command


def make_tree(root: Path, n: int) -> None:
    done = root / ".complete"
    if done.exists():
        return
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"c{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(folder / f"{i}.png")
    done.write_text(str(n))


def startup_seconds(root: Path) -> tuple[float, int]:
    from sslrun.config import DataConfig
    from sslrun.data import DATASETS

    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), {"name": "imagefolder", "root": str(root), "cache": "none"})
    start = time.perf_counter()
    splits = DATASETS.get("imagefolder")(cfg)
    return time.perf_counter() - start, len(splits.train) + len(splits.val)


def make_jpeg_tree(root: Path, n: int, px: int) -> None:
    done = root / ".complete"
    if done.exists():
        return
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"c{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (px // 8, px // 8, 3), dtype=np.uint8)  # smooth enough to compress like a photo
        Image.fromarray(small).resize((px, px), Image.BILINEAR).save(folder / f"{i}.jpg", quality=90)
    done.write_text(str(n))


def resident_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def epoch_rate(loader) -> tuple[float, int]:
    images, start = 0, time.perf_counter()
    for views, _ in loader:
        images += len(views[0])
    return images / (time.perf_counter() - start), images


def loader_rows(trees: Path, workers_list: list[int], repeats: int) -> list[dict]:
    import torch
    from torchvision import datasets
    from torchvision.transforms import v2

    from sslrun.config import DataConfig
    from sslrun.data import SSLDataModule
    from sslrun.shard import main as shard_main

    rows = []
    for px, n in ((64, 2000), (224, 600)):
        tree, shards = trees / f"jpeg{px}", trees / f"jpeg{px}-shards"
        make_jpeg_tree(tree, n, px)
        if not (shards / "index.json").exists():
            shard_main([str(tree), str(shards), "--force", "--max-count", str(n // 8)])
        for workers in workers_list:
            base = {"batch_size": 64, "num_workers": workers, "image_size": px, "val_fraction": 0.2}
            loaders = {}
            for kind, keys in (
                ("folder", {"name": "imagefolder", "root": str(tree), "cache": "none"}),
                ("shards", {"name": "webdataset", "root": str(shards)}),
            ):
                cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), {**base, **keys})
                data = SSLDataModule(cfg, "pretrain")
                loaders[kind] = data.train_dataloader
                if kind == "folder":  # the reference: the same files, views and batches through torchvision
                    transform = v2.Compose([v2.PILToTensor(), data._train_transform()])
                    reference = datasets.ImageFolder(str(tree), transform=transform)
                    keep = torch.randperm(len(reference), generator=torch.Generator().manual_seed(0))
                    subset = torch.utils.data.Subset(reference, keep[: len(data.splits.train)].tolist())
                    loaders["reference"] = lambda subset=subset, workers=workers: torch.utils.data.DataLoader(
                        subset, batch_size=64, shuffle=True, drop_last=True, num_workers=workers
                    )
            best: dict[str, tuple[float, int]] = {}
            for repeat in range(repeats):  # alternating order, best epoch of each: the machine is shared
                kinds = list(loaders)
                for kind in kinds[repeat % 3 :] + kinds[: repeat % 3]:
                    rate, images = epoch_rate(loaders[kind]())
                    best[kind] = max(best.get(kind, (0.0, 0)), (rate, images))
            for kind in ("reference", "folder", "shards"):
                rate, images = best[kind]
                row = {"bench": "loader", "px": px, "loader": kind, "workers": workers, "epoch": None}
                row |= {"images": images, "images_per_s": rate, "repeats": repeats}
                if kind != "reference":
                    row["ratio"] = rate / best["reference"][0]
                rows.append(row)
    tree = trees / "jpeg64"
    cfg = OmegaConf.merge(
        OmegaConf.structured(DataConfig),
        {"name": "imagefolder", "root": str(tree), "cache": "none", "batch_size": 64, "num_workers": 0},
    )
    loader = SSLDataModule(cfg, "pretrain").train_dataloader()
    for epoch in range(3):
        epoch_rate(loader)
        row = {"bench": "loader_memory", "px": 64, "loader": "folder", "workers": 0, "epoch": epoch}
        rows.append(row | {"rss_mb": resident_mb()})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[10000, 100000])
    parser.add_argument("--trees", default="runs/data/bench")
    parser.add_argument("--results", help="also append each line to this results/*.jsonl file")
    parser.add_argument("--loader", action="store_true", help="loader throughput and memory instead of start-up")
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2], help="with --loader (0 1 2)")
    parser.add_argument("--repeats", type=int, default=3, help="with --loader: epochs per loader, best kept (3)")
    args = parser.parse_args()
    import sslrun.data  # noqa: F401  (torch and the registries imported before the clock starts)

    origin = provenance(this_command()) if args.results else {}
    if args.loader:
        for row in loader_rows(Path(args.trees), args.workers, args.repeats):
            print(json.dumps(row), flush=True)
            if args.results:
                append_row(args.results, row | origin)
        return
    rows = []
    for n in args.sizes:
        root = Path(args.trees) / str(n)
        make_tree(root, n)
        seconds, found = startup_seconds(root)
        row = {"bench": "imagefolder_startup", "files": found, "cache": "none", "seconds": seconds}
        if rows:
            row["growth"] = seconds / rows[0]["seconds"]
            row["files_growth"] = found / rows[0]["files"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.results:
            append_row(args.results, row | origin)


if __name__ == "__main__":
    main()
