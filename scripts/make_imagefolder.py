"""Write Fashion-MNIST (IDX files) out as a folder of PNG images, the way a user's own data arrives.

Layouts (``--layout``): ``split`` = ``OUT/train/<class>/*.png`` + ``OUT/val/<class>/*.png``; ``classes`` =
``OUT/<class>/*.png``; ``flat`` = ``OUT/*.png`` (no labels at all). Images are taken in file order from the chosen
split of the IDX files: the first ``--train`` for train, the next ``--val`` for val.

    python scripts/make_imagefolder.py --out runs/data/fmnist --split t10k --train 8000 --val 2000
    python scripts/make_imagefolder.py --out runs/data/fmnist-train --split train --train 8000 --val 2000 \\
        --idx-dir /usr/share/datasets/fashion-mnist      # Debian's package dataset-fashion-mnist: the 60k split
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from sslrun.data.fashion_mnist import EMBEDDED, read_idx

CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--idx-dir", default=str(EMBEDDED), help="folder with <split>-images-idx3-ubyte.gz files")
    parser.add_argument("--split", default="t10k", choices=("t10k", "train"))
    parser.add_argument("--train", type=int, default=8000)
    parser.add_argument("--val", type=int, default=2000)
    parser.add_argument("--layout", default="split", choices=("split", "classes", "flat"))
    args = parser.parse_args()
    idx = Path(args.idx_dir)
    images = read_idx(idx / f"{args.split}-images-idx3-ubyte.gz")
    labels = read_idx(idx / f"{args.split}-labels-idx1-ubyte.gz")
    out = Path(args.out)
    parts = {"train": range(args.train), "val": range(args.train, args.train + args.val)}
    for part, indices in parts.items():
        for i in indices:
            if args.layout == "split":
                folder = out / part / CLASSES[labels[i]]
            elif args.layout == "classes":
                folder = out / CLASSES[labels[i]]
            else:
                folder = out
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(folder / f"{part}_{i:05d}.png")
    print(f"wrote {args.train} + {args.val} images to {out} ({args.layout} layout)")


if __name__ == "__main__":
    main()
