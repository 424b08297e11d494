"""The README's method comparison: every registered method (or ``--methods``) pretrained on one dataset at one budget,
then evaluated by ``sslrun finetune mode=linear`` (linear probe top-1 and kNN top-1 on the held-out split), beside a
random-init encoder under the same protocol. One row per method, mean +- std over ``--seeds``. ``--layers`` also
probes earlier stages (``eval.layer``) and reports each method's best layer beside its last; ``--full N`` adds N
epochs of full fine-tuning (``--full-overrides``: settings for that run only, e.g. AdamW for ViTs). Prints a
Markdown table and writes it, with one JSON line per run, to ``--out``; ``--results results/<table>.jsonl`` also
appends one row per method, with its provenance, to the data docs/results.md is generated from.

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

from provenance import append_row, provenance, this_command

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


def evaluate(out: Path, name: str, seed: int, pretrained: str, args: argparse.Namespace) -> dict:
    """Linear probe + kNN at the last layer and at each of ``--layers``, and ``--full`` epochs of full fine-tuning:
    {"last": metrics, "<layer>": metrics, "full": metrics}; a run that failed is left out."""
    common = [f"pretrained={pretrained}", f"seed={seed}", *args.both]
    results = {"last": sslrun(out / f"{name}-s{seed}-linear", "finetune", "mode=linear", *common)}
    for layer in args.layers:
        results[layer] = sslrun(
            out / f"{name}-s{seed}-linear-{layer}", "finetune", "mode=linear", f"eval.layer={layer}", *common
        )
    if args.full:
        results["full"] = sslrun(
            out / f"{name}-s{seed}-full",
            "finetune",
            "mode=full",
            f"trainer.max_epochs={args.full}",
            *common,
            *args.full_overrides,
        )
    return {k: v for k, v in results.items() if v}


def layer_values(runs: list[dict], layer: str, key: str) -> list[float]:
    return [r[layer][key] for r in runs if layer in r]


def best_layer(runs: list[dict], args: argparse.Namespace) -> str:
    """The stage (last or one of ``--layers``) with the best mean linear top-1."""
    layers = [layer for layer in ["last", *args.layers] if layer_values(runs, layer, "top1")]
    return max(layers, key=lambda layer: statistics.mean(layer_values(runs, layer, "top1")), default="last")


def summarise(name: str, runs: list[dict], pretrains: list[dict], args: argparse.Namespace) -> list[str]:
    """One table row: last-layer linear and kNN, the best layer by mean linear top-1 with its linear and kNN, the
    full fine-tune, pretraining speed and minutes."""

    def values(layer: str, key: str) -> list[float]:
        return layer_values(runs, layer, key)

    row = [name, cell(values("last", "top1")), cell(values("last", "knn_top1"))]
    if args.layers:
        best = best_layer(runs, args)
        row += [best, cell(values(best, "top1")), cell(values(best, "knn_top1"))]
    if args.full:
        row.append(cell(values("full", "top1")))
    if pretrains:
        row += [cell([p["img_per_s"] for p in pretrains], 0), cell([p["seconds"] / 60 for p in pretrains], 1)]
    else:
        row += ["-", "-"]
    return row


def stats(field: str, values: list[float]) -> dict:
    """``{field: mean, field_std: std}``; the std is None for one value, both are None for none."""
    if not values:
        return {field: None, f"{field}_std": None}
    std = statistics.stdev(values) if len(values) > 1 else None
    return {field: statistics.mean(values), f"{field}_std": std}


def result_row(name: str, seeds: list[int], runs: list[dict], pretrains: list[dict], args: argparse.Namespace) -> dict:
    """The figures of ``summarise``'s row as numbers, for ``--results``."""
    row = {"method": name, "seeds": seeds, **({"backbone": args.label} if args.label else {})}
    params = [r["last"].get("backbone_params") for r in runs if r["last"].get("backbone_params")]
    if params:
        row["backbone_params"] = params[0]
    row |= stats("linear_top1", layer_values(runs, "last", "top1"))
    row |= stats("knn_top1", layer_values(runs, "last", "knn_top1"))
    if args.layers:
        best = best_layer(runs, args)
        row["best_layer"] = best
        row |= stats("linear_top1_best_layer", layer_values(runs, best, "top1"))
        row |= stats("knn_top1_best_layer", layer_values(runs, best, "knn_top1"))
    if args.full:
        row["finetune_epochs"] = args.full
        row |= stats("finetune_top1", layer_values(runs, "full", "top1"))
    if pretrains:
        row |= stats("pretrain_img_per_s", [p["img_per_s"] for p in pretrains])
        row |= stats("pretrain_min", [p["seconds"] / 60 for p in pretrains])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--methods", nargs="*", help="default: every registered method")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--layers", nargs="*", default=[], help="also probe these stages (eval.layer), e.g. layer2")
    parser.add_argument("--full", type=int, default=0, help="also fine-tune the whole encoder for this many epochs")
    parser.add_argument("--full-overrides", nargs="*", default=[], help="overrides for the full fine-tune only")
    parser.add_argument("--both", nargs="*", default=[], help="overrides for pretrain and finetune")
    parser.add_argument("--results", help="also append one row per method to this results/*.jsonl file")
    parser.add_argument("--label", help="a name for the backbone of these runs, added to each --results row")
    parser.add_argument(
        "--random-variants",
        nargs="*",
        default=[],
        help="more random-init rows, each with its own overrides (comma-separated), e.g. eval.precise_bn=false",
    )
    parser.add_argument("overrides", nargs="*", help="overrides for pretrain only")
    args = parser.parse_args()
    origin = provenance(this_command()) if args.results else {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods = args.methods or methods_from_registry()
    log = (out / "runs.jsonl").open("a")
    random_runs, random_seeds = [], []
    for seed in args.seeds:
        runs = evaluate(out, "random", seed, "none", args)
        if "last" in runs:
            random_runs.append(runs)
            random_seeds.append(seed)
            log.write(json.dumps({"method": "random init", "seed": seed, "eval": runs}) + "\n")
    rows = [summarise("random init", random_runs, [], args)]
    if args.results:
        append_row(args.results, result_row("random init", random_seeds, random_runs, [], args) | origin)
    for variant in args.random_variants:  # the same random init under other evaluation settings: a stronger baseline?
        extra = variant.split(",")
        name, tag = f"random init ({' '.join(extra)})", "random-" + "-".join(e.replace("=", "_") for e in extra)
        varied = argparse.Namespace(**{**vars(args), "both": [*args.both, *extra]})
        runs = [(seed, r) for seed in args.seeds if "last" in (r := evaluate(out, tag, seed, "none", varied))]
        for seed, r in runs:
            log.write(json.dumps({"method": name, "seed": seed, "eval": r}) + "\n")
        rows.append(summarise(name, [r for _, r in runs], [], args))
        if args.results:
            row = result_row(name, [seed for seed, _ in runs], [r for _, r in runs], [], args)
            append_row(args.results, row | origin)
    for method in methods:
        runs, pretrains, seeds = [], [], []
        for seed in args.seeds:
            pre_dir = out / f"{method}-s{seed}"
            pre = sslrun(pre_dir, "pretrain", f"method={method}", f"seed={seed}", *args.both, *args.overrides)
            if not pre:
                continue
            evaluated = evaluate(out, method, seed, str(pre_dir), args)
            if "last" not in evaluated:
                continue
            runs.append(evaluated)
            pretrains.append(pre)
            seeds.append(seed)
            log.write(json.dumps({"method": method, "seed": seed, "pretrain": pre, "eval": evaluated}) + "\n")
            log.flush()
        rows.append(summarise(method, runs, pretrains, args))
        if args.results:
            append_row(args.results, result_row(method, seeds, runs, pretrains, args) | origin)
        print(f"{method}: {' | '.join(rows[-1][1:])}", flush=True)
    header = ["method", "linear top-1", "kNN top-1"]
    if args.layers:
        header += ["best layer", "linear top-1 (best layer)", "kNN top-1 (best layer)"]
    if args.full:
        header.append(f"fine-tune top-1 ({args.full} epochs)")
    header += ["pretrain img/s", "pretrain min"]
    layers = f"; layers probed: last, {', '.join(args.layers)} (`eval.layer`)" if args.layers else ""
    full_cmd = " ".join(["mode=full", f"trainer.max_epochs={args.full}", *args.full_overrides])
    full = f"; full fine-tune: `sslrun finetune {full_cmd}`" if args.full else ""
    protocol = (
        f"Protocol: pretrain `{' '.join(args.both + args.overrides)}`, seeds {args.seeds}; evaluation `sslrun finetune "
        f"mode=linear` (frozen encoder: linear probe top-1 and kNN top-1, k=20, T=0.1, on the held-out split){layers}"
        f"{full}."
    )
    lines = [
        f"| {' | '.join(header)} |",
        f"|{'---|' * len(header)}",
        *(f"| {' | '.join(row)} |" for row in rows),
        "",
        protocol,
    ]
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
