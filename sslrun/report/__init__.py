"""``sslrun report RUN_OR_SWEEP_DIR ... [--out DIR]``: one table of every run found (the config keys that differ,
then the final metrics) as report.md / report.csv, training curves, and for pretrain runs with a checkpoint a t-SNE
map of validation embeddings and a nearest-neighbour retrieval grid."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from rich.markup import escape

from sslrun import console
from sslrun.outputs import run_holding
from sslrun.report import table

MAX_IMAGE_RUNS = 8


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sslrun report",
        description="Tables and plots from run dirs and sweep dirs written by sslrun pretrain/finetune.",
    )
    parser.add_argument("dirs", nargs="+", metavar="RUN_OR_SWEEP_DIR", help="run dirs or sweep dirs (searched down)")
    parser.add_argument("--out", help="output dir (default: DIR/report for one dir, else ./report)")
    parser.add_argument("--max-points", type=int, default=2000, help="val embeddings in the t-SNE map (default 2000)")
    parser.add_argument("--no-images", action="store_true", help="skip the checkpoint-based plots (t-SNE, retrieval)")
    return parser.parse_args(argv)


def warn(message: str) -> None:
    console.err_console.print(f"[bold yellow]warning:[/bold yellow] {escape(message)}", highlight=False, soft_wrap=True)


def slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", text).strip("_.")[:80] or "run"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


def image_plots(runs: list[table.Run], out: Path, max_points: int) -> list[Path]:
    """t-SNE and retrieval figures for the first MAX_IMAGE_RUNS pretrain runs; finetune runs are left out."""
    from sslrun.report import features, plots

    pretrain = [run for run in runs if not ("pretrained" in run.config and "method.name" not in run.config)]
    finetune = len(runs) - len(pretrain)
    if finetune:
        console.console.print(f"image plots: {finetune} finetune run(s) left out (no pretrain checkpoint)")
    if len(pretrain) > MAX_IMAGE_RUNS:
        console.console.print(f"image plots: the first {MAX_IMAGE_RUNS} of {len(pretrain)} pretrain runs only")
    written, taken = [], set()
    for run in pretrain[:MAX_IMAGE_RUNS]:
        if not (run.path / "checkpoints" / "last.ckpt").is_file():
            warn(f"no image plots for {run.short}: it has no checkpoints/last.ckpt")
            continue
        console.console.print(f"image plots: {escape(run.short)} (embeddings, t-SNE, retrieval)", highlight=False)
        try:
            embedded = features.embed(run.path, max_points)
        except ValueError as err:
            warn(f"no image plots for {run.short}: {err}")
            continue
        name = slug(run.short, taken)
        points = features.tsne(embedded.val_x)
        if points is not None:
            title = f"t-SNE of {len(points)} val embeddings (cosine), {run.short}"
            written.append(plots.embedding(points, embedded.val_y.numpy(), title, out / f"embedding_{name}.png"))
        found = features.retrieve(embedded)
        bank = "" if found.bank_size == found.train_size else f" of {found.bank_size}"
        title = f"query | {features.NEIGHBOURS} nearest{bank} training images (cosine, {run.short})"
        if any(m is not None for row in found.matches for m in row):
            title += "\ngreen: same class as the query, red: another class"
        path = out / f"retrieval_{name}.png"
        written.append(plots.retrieval(found.queries, found.neighbours, found.matches, found.captions, title, path))
    return written


def main(argv: list[str]) -> None:
    args = parse(argv)
    if args.max_points < 1:
        console.fail(f"--max-points={args.max_points} must be a positive number of points")
    try:
        collected = table.collect([Path(d) for d in args.dirs])
    except ValueError as err:
        console.fail(escape(str(err)))
    if collected.skipped:
        shown = ", ".join(str(p) for p in collected.skipped[:3]) + (" ..." if len(collected.skipped) > 3 else "")
        warn(f"skipped {len(collected.skipped)} run dir(s) with an unreadable metrics.json: {shown}")
    out = Path(args.out) if args.out else Path(args.dirs[0]) / "report" if len(args.dirs) == 1 else Path("report")
    holder = run_holding(out.resolve())
    if holder is not None:
        console.fail(escape(f"--out {out} is inside the checkpoints of run {holder}; write the report elsewhere"))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        console.fail(escape(f"cannot write the report to {out}: {err.strerror}"))
    title = f"sslrun report: {len(collected.runs)} run(s)"
    console.console.print(table.rich_table(collected, title, console.console.width))
    written = table.write(collected, out)
    from sslrun.report import plots

    curves = plots.curves(collected.runs, out)
    if curves is None:
        warn("no training curves: no run has a csv/metrics.csv with train_loss, knn_top1, linear_top1 or rankme")
    else:
        written.append(curves)
    if not args.no_images:
        finished = [run for run in collected.runs if run.metrics.get("state", "finished") == "finished"]
        written += image_plots(finished, out, args.max_points)
    console.console.print("[bold]wrote:[/bold]")
    for path in written:
        console.console.print(f"  {escape(str(path))}", highlight=False, soft_wrap=True)
