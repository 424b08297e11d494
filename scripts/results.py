"""The README's results tables: ``sslrun pretrain``, then ``sslrun finetune mode=linear`` of that checkpoint and of a
random init (``pretrained=none``) under the same protocol. Prints a Markdown table and one JSON line. Positional
overrides go to ``pretrain`` only; ``--both`` overrides (backbone, data, seed) to all three runs.

    python scripts/results.py --out runs/results
    python scripts/results.py --out runs/folder --both backbone=resnet18 backbone.width=0.25 data=imagefolder \
        data.root=runs/data/fmnist -- trainer.max_epochs=8
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

SSLRUN = shutil.which("sslrun") or str(Path(sys.executable).with_name("sslrun"))


def sslrun(*args: str) -> dict:
    run_dir = next(a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir="))
    subprocess.run([SSLRUN, *args, "trainer.enable_progress_bar=false"], check=True)
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/results")
    parser.add_argument("--method", default="contrastive")
    parser.add_argument("--both", nargs="*", default=[], help="overrides for pretrain and both finetune runs")
    parser.add_argument("overrides", nargs="*", help="overrides for pretrain only")
    args = parser.parse_args()
    out = Path(args.out)
    pre = sslrun("pretrain", f"method={args.method}", f"hydra.run.dir={out / 'pretrain'}", *args.both, *args.overrides)
    ssl = sslrun(
        "finetune", f"pretrained={out / 'pretrain'}", "mode=linear", f"hydra.run.dir={out / 'linear'}", *args.both
    )
    rand = sslrun("finetune", "pretrained=none", "mode=linear", f"hydra.run.dir={out / 'random'}", *args.both)
    rows = [
        ("random init", "-", "-", rand["knn_top1"], rand["top1"], rand["top5"]),
        (
            args.method,
            f"{pre['seconds'] / 60:.1f}",
            f"{pre['img_per_s']:.0f}",
            ssl["knn_top1"],
            ssl["top1"],
            ssl["top5"],
        ),
    ]
    print(f"\nbackbone: {ssl['backbone']}")
    print("| encoder | pretrain min | pretrain img/s | kNN top-1 | linear top-1 | linear top-5 |")
    print("|---|---|---|---|---|---|")
    for name, minutes, speed, knn, top1, top5 in rows:
        print(f"| {name} | {minutes} | {speed} | {knn:.3f} | {top1:.3f} | {top5:.3f} |")
    print(json.dumps({"pretrain": pre, "linear": ssl, "random": rand}))


if __name__ == "__main__":
    main()
