"""The README's method comparison: every registered method (or ``--methods``) pretrained on one dataset at one budget,
then evaluated by ``sslrun finetune mode=linear`` (linear probe top-1 and kNN top-1 on the held-out split), beside a
random-init encoder under the same protocol. One row per method, mean +- std over ``--seeds``. Prints a Markdown
table and writes it, with one JSON line per run, to ``--out``.

    python scripts/compare_methods.py --out runs/compare --seeds 0 \\
        --both data=fashion_mnist backbone=resnet18 backbone.width=0.25 -- trainer.max_epochs=8

``--both`` overrides go to pretrain and finetune (data, backbone, seed is added per run); positional overrides to
pretrain only. A run whose metrics.json already exists under ``--out`` is read back, not run again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

SSLRUN = shutil.which("sslrun") or str(Path(sys.executable).with_name("sslrun"))


def sslrun(run_dir: Path, *args: str) -> dict:
    metrics = run_dir / "metrics.json"
    if not metrics.exists():
        cmd = [SSLRUN, *args, f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "stdout.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            print(f"FAILED ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}", file=sys.stderr)
            return {}
    return json.loads(metrics.read_text())


def cell(values: list[float], digits: int = 3) -> str:
    if not values:
        return "failed"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def methods_from_registry() -> list[str]:
    from sslrun.methods import METHODS

    return METHODS.names()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--methods", nargs="*", help="default: every registered method")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--both", nargs="*", default=[], help="overrides for pretrain and finetune")
    parser.add_argument("overrides", nargs="*", help="overrides for pretrain only")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods = args.methods or methods_from_registry()
    log = (out / "runs.jsonl").open("a")
    rows = []
    random = {"linear": [], "knn": []}
    for seed in args.seeds:
        r = sslrun(out / f"random-s{seed}", "finetune", "pretrained=none", "mode=linear", f"seed={seed}", *args.both)
        if r:
            random["linear"].append(r["top1"])
            random["knn"].append(r["knn_top1"])
            log.write(json.dumps({"method": "random init", "seed": seed, "linear": r}) + "\n")
    rows.append(("random init", cell(random["linear"]), cell(random["knn"]), "-", "-"))
    for method in methods:
        res = {"linear": [], "knn": [], "speed": [], "minutes": []}
        for seed in args.seeds:
            pre_dir = out / f"{method}-s{seed}"
            pre = sslrun(pre_dir, "pretrain", f"method={method}", f"seed={seed}", *args.both, *args.overrides)
            if not pre:
                continue
            lin = sslrun(
                out / f"{method}-s{seed}-linear",
                "finetune",
                f"pretrained={pre_dir}",
                "mode=linear",
                f"seed={seed}",
                *args.both,
            )
            if not lin:
                continue
            res["linear"].append(lin["top1"])
            res["knn"].append(lin["knn_top1"])
            res["speed"].append(pre["img_per_s"])
            res["minutes"].append(pre["seconds"] / 60)
            log.write(json.dumps({"method": method, "seed": seed, "pretrain": pre, "linear": lin}) + "\n")
            log.flush()
        rows.append((method, cell(res["linear"]), cell(res["knn"]), cell(res["speed"], 0), cell(res["minutes"], 1)))
        print(f"{method}: linear {rows[-1][1]}, kNN {rows[-1][2]}", flush=True)
    protocol = (
        f"Protocol: pretrain `{' '.join(args.both + args.overrides)}`, seeds {args.seeds}; evaluation `sslrun finetune "
        f"mode=linear` (frozen encoder: linear probe top-1 and kNN top-1, k=20, T=0.1, on the held-out split)."
    )
    lines = [
        "| method | linear top-1 | kNN top-1 | pretrain img/s | pretrain min |",
        "|---|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in rows),
        "",
        protocol,
    ]
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
