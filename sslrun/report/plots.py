"""The report's figures: training curves from each run's csv/metrics.csv, the t-SNE map and the retrieval grid."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from sslrun.report.table import Run  # noqa: E402

PANELS = {
    "train_loss": "train loss (epoch mean)",
    "knn_top1": "kNN top-1 (val)",
    "linear_top1": "online linear probe top-1 (val)",
    "rankme": "RankMe (val features)",
    "top1": "finetune top-1 (val)",
}
UNLABELLED = "#9e9e9e"


def read_curves(path: Path) -> dict[str, list[tuple[float, float]]]:
    """metric -> [(epoch, value)] sorted by step; a (step, metric) logged twice (a resumed run) keeps the last row."""
    last: dict[str, dict[float, tuple[float, float]]] = {}
    try:
        with path.open(newline="") as file:
            for row in csv.DictReader(file):
                step, epoch = _number(row.get("step")), _number(row.get("epoch"))
                if step is None or epoch is None:
                    continue
                for metric, text in row.items():
                    value = _number(text)
                    if metric not in ("step", "epoch") and value is not None:
                        last.setdefault(metric, {})[step] = (epoch, value)
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    return {metric: [points[s] for s in sorted(points)] for metric, points in last.items()}


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def curves(runs: Sequence[Run], out: Path) -> Path | None:
    """``curves.png``: one panel per metric in PANELS that some run logged, one line per run; None when none did."""
    logged = [read_curves(run.path / "csv" / "metrics.csv") for run in runs]
    panels = [m for m in PANELS if any(curves.get(m) for curves in logged)]
    if not panels:
        return None
    cols = min(len(panels), 2)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.6 * rows), squeeze=False)
    colours = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20")
    styles = ("-", "--", ":", "-.")
    for ax, metric in zip(axes.flat, panels, strict=False):
        for i, (run, curves) in enumerate(zip(runs, logged, strict=True)):
            if curves.get(metric):
                x, y = zip(*curves[metric], strict=True)
                style = {"color": colours(i % colours.N), "linestyle": styles[i // colours.N % len(styles)]}
                ax.plot(x, y, marker="o", markersize=3, label=run.short, **style)
        values = [y for curves in logged for _, y in curves.get(metric, [])]
        spread = min(values) > 0 and max(values) / min(values) > 20  # e.g. InfoNCE next to a pixel MSE
        if spread:
            ax.set_yscale("log")
        ax.set_title(PANELS[metric] + (" (log scale)" if spread else ""))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        epochs = {x for curves in logged for x, _ in curves.get(metric, [])}
        if len(epochs) == 1:  # a single epoch: one tick, not a fractional axis around it
            ax.set_xticks(list(epochs))
            ax.set_xlim(min(epochs) - 1, min(epochs) + 1)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    handles: dict[str, Any] = {}  # legend in run order, whichever panel a run appears in
    for ax in list(axes.flat)[: len(panels)]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    order = [run.short for run in runs if run.short in handles]
    fig.tight_layout()
    # below the panels; savefig's tight bounding box grows the image to hold it
    fig.legend([handles[n] for n in order], order, loc="upper center", bbox_to_anchor=(0.5, 0), ncol=3, fontsize=8)
    return _save(fig, out / "curves.png")


def embedding(points: np.ndarray, labels: np.ndarray, title: str, path: Path) -> Path:
    """A 2-D map (N, 2) coloured by class id; label -1 (unlabelled) in grey."""
    fig, ax = plt.subplots(figsize=(7, 6))
    classes = sorted(int(c) for c in np.unique(labels) if c >= 0)
    unlabelled = labels < 0
    size = 5 if len(points) > 1000 else 12
    if unlabelled.any():
        ax.scatter(*points[unlabelled].T, s=size, c=UNLABELLED, label="unlabelled", alpha=0.7)
    if len(classes) <= 20:
        cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
        for i, c in enumerate(classes):
            ax.scatter(*points[labels == c].T, s=size, color=cmap(i % cmap.N), label=str(c), alpha=0.8)
        ax.legend(title="class", markerscale=2.5, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    else:
        labelled = ~unlabelled
        mapped = ax.scatter(*points[labelled].T, s=size, c=labels[labelled], cmap="viridis", alpha=0.8)
        fig.colorbar(mapped, ax=ax, label="class id")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    return _save(fig, path)


def retrieval(
    queries: Sequence[np.ndarray],
    neighbours: Sequence[Sequence[np.ndarray]],
    matches: Sequence[Sequence[bool | None]],
    captions: Sequence[Sequence[str]],
    title: str,
    path: Path,
) -> Path:
    """Query images in the first column and their neighbours in the next; a neighbour's border is green when its label
    equals the query's, red when not, none when labels are unknown (``matches`` None). Images: (H, W) or (H, W, 3)
    floats in [0, 1]; ``captions``: per row, the text under the query, then under each neighbour."""
    rows, cols = len(queries), 1 + max(len(n) for n in neighbours)
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols + 0.3, 1.7 * rows + 0.6), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            image = queries[r] if c == 0 else neighbours[r][c - 1] if c - 1 < len(neighbours[r]) else None
            if image is None:
                ax.set_visible(False)
                continue
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xlabel(captions[r][c], fontsize=7, labelpad=2)
            match = None if c == 0 else matches[r][c - 1]
            for spine in ax.spines.values():
                spine.set_visible(c == 0 or match is not None)
                spine.set_color("black" if c == 0 else "tab:green" if match else "tab:red")
                spine.set_linewidth(1 if c == 0 else 3)
    axes[0, 0].set_title("query", fontsize=9)
    for c in range(1, cols):
        axes[0, c].set_title(f"#{c}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
