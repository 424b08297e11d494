"""Start-up of ``data=imagefolder`` on generated trees: how long building the dataset takes (the directory walk, the
header sample, the split) for trees of N small images, streamed (``data.cache=none``). One JSON line per size; the
growth from the smallest to the largest tree is the figure to watch (the walk is linear, nothing else should be).

    python scripts/bench_data.py --sizes 10000 100000 --trees runs/data/bench [--results results/data_startup.jsonl]

A tree is written once under ``--trees`` (``<N>/<class>/<i>.png``, 10 classes of 32 px grayscale PNGs) and reused.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[10000, 100000])
    parser.add_argument("--trees", default="runs/data/bench")
    parser.add_argument("--results", help="also append each line to this results/*.jsonl file")
    args = parser.parse_args()
    import sslrun.data  # noqa: F401  (torch and the registries imported before the clock starts)

    origin = provenance(this_command()) if args.results else {}
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
