"""The README's results tables: ``sslrun pretrain``, then ``sslrun finetune mode=linear`` of that checkpoint and of a
random init (``pretrained=none``) under the same protocol, for each of ``--seeds`` (mean ± std when more than one).
Prints a Markdown table and one JSON line. Positional overrides go to ``pretrain`` only; ``--both`` overrides
(backbone, data) to all three runs; ``seed=<s>`` is added to all three. A run whose metrics.json exists under
``--out`` is read back, not run again. ``--results results/<table>.jsonl`` also appends the two rows, with their
provenance, to the data docs/results.md is generated from (``--label`` names the setting in that table).

    python scripts/results.py --out runs/results --seeds 0 1 2
    python scripts/results.py --out runs/folder --seeds 0 1 2 --both backbone=resnet18 backbone.width=0.25 \
        data=imagefolder data.root=runs/data/fmnist -- trainer.max_epochs=8
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from provenance import append_row, provenance, this_command

SSLRUN = shutil.which("sslrun") or str(Path(sys.executable).with_name("sslrun"))


def sslrun(run_dir: Path, *args: str) -> dict:
    metrics = run_dir / "metrics.json"
    if not metrics.exists():
        cmd = [SSLRUN, *args, f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false"]
        subprocess.run(cmd, check=True)
    return json.loads(metrics.read_text())


def cell(values: list[float], digits: int = 3) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def stats(field: str, values: list[float]) -> dict:
    """``{field: mean, field_std: std}``; the std is None for a single value."""
    return {field: statistics.mean(values), f"{field}_std": statistics.stdev(values) if len(values) > 1 else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/results")
    parser.add_argument("--method", default="contrastive")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--both", nargs="*", default=[], help="overrides for pretrain and both finetune runs")
    parser.add_argument("--results", help="also append the random-init and SSL rows to this results/*.jsonl file")
    parser.add_argument("--label", help="the setting's name in --results (default: the overrides, or 'defaults')")
    parser.add_argument("overrides", nargs="*", help="overrides for pretrain only")
    args = parser.parse_args()
    out = Path(args.out)
    runs = []
    for seed in args.seeds:
        where = out / f"s{seed}" if len(args.seeds) > 1 or seed != 0 else out
        both = [f"seed={seed}", *args.both]
        pre = sslrun(where / "pretrain", "pretrain", f"method={args.method}", *both, *args.overrides)
        ssl = sslrun(where / "linear", "finetune", f"pretrained={where / 'pretrain'}", "mode=linear", *both)
        rand = sslrun(where / "random", "finetune", "pretrained=none", "mode=linear", *both)
        runs.append({"seed": seed, "pretrain": pre, "linear": ssl, "random": rand})

    def values(run: str, key: str) -> list[float]:
        return [r[run][key] for r in runs]

    minutes = cell([m / 60 for m in values("pretrain", "seconds")], 1)
    speed = cell(values("pretrain", "img_per_s"), 0)
    print(f"\nbackbone: {runs[0]['linear']['backbone']}; seeds {args.seeds}")
    print("| encoder | pretrain min | pretrain img/s | kNN top-1 | linear top-1 | linear top-5 |")
    print("|---|---|---|---|---|---|")
    for name, run, mins, imgs in (("random init", "random", "-", "-"), (args.method, "linear", minutes, speed)):
        scores = [cell(values(run, key)) for key in ("knn_top1", "top1", "top5")]
        print(f"| {name} | {mins} | {imgs} | {' | '.join(scores)} |")
    print(json.dumps(runs))
    if args.results:
        label = args.label or " ".join(args.both + args.overrides) or "defaults"
        origin = provenance(this_command())
        for name, run in (("random init", "random"), (args.method, "linear")):
            row = {"label": label, "encoder": name, "seeds": args.seeds}
            if run == "linear":
                row |= stats("pretrain_min", [m / 60 for m in values("pretrain", "seconds")])
                row |= stats("pretrain_img_per_s", values("pretrain", "img_per_s"))
            for key, field in (("knn_top1", "knn_top1"), ("top1", "linear_top1"), ("top5", "linear_top5")):
                row |= stats(field, values(run, key))
            append_row(args.results, row | origin)


if __name__ == "__main__":
    main()
