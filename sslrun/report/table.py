"""Runs found under the given dirs, and their table: config keys that differ between runs, then the final metrics."""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from rich.markup import escape
from rich.table import Table

from sslrun.errors import FAILED

HEADLINE = (
    "state",
    "knn_top1",
    "linear_top1",
    "top1",
    "top5",
    "rankme",
    "train_loss",
    "img_per_s",
)  # terminal, many runs
MISSING = object()  # a config key a run does not have (e.g. method.* in a finetune run)


@dataclass
class Run:
    path: Path
    name: str = ""  # path relative to the runs' common parent
    label: str = ""  # short legend text: the differing keys that tell this run apart (method=byol seed=1)
    config: dict[str, Any] = field(default_factory=dict)  # flattened, dotted keys
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def short(self) -> str:
        """What names the run in legends, titles, file names and the terminal: its label or its name, the shorter."""
        return min(self.label, self.name, key=len)


@dataclass
class Collected:
    runs: list[Run]
    skipped: list[Path]  # run dirs whose metrics.json could not be read
    differing: list[str]  # config keys whose values differ between runs, in config order


def _natural(path: Path) -> list[Any]:
    """Sort key putting Hydra's ``2_...`` before ``10_...``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def find_run_dirs(paths: Sequence[Path]) -> list[Path]:
    """Every run dir under each path in turn (a path may itself be a run), without repeats: a dir holding a
    metrics.json, or a run that did not finish (a ``failed.json``, or a checkpoint without metrics)."""
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise ValueError(
                f"{path} does not exist: pass a run dir or a sweep dir written by sslrun pretrain/finetune"
            )
        if path.is_file():
            if path.name != "metrics.json":
                raise ValueError(f"{path} is a file: pass a run dir or a sweep dir written by sslrun pretrain/finetune")
            path = path.parent
        dirs = set()
        for mark in path.rglob("*"):  # one walk: a run dir holds one of these marks
            if mark.name in ("metrics.json", FAILED) and mark.is_file():
                dirs.add(mark.parent)
            elif mark.name == "last.ckpt" and mark.parent.name == "checkpoints" and mark.is_file():
                dirs.add(mark.parent.parent)
        here = sorted(dirs, key=_natural)
        if not here:
            raise ValueError(
                f"no metrics.json under {path}: pass a run dir or a sweep dir written by sslrun pretrain/finetune"
            )
        seen = {d.resolve() for d in found}
        found += [d for d in here if d.resolve() not in seen]
    return found


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: str(node) if isinstance(node, list) else node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(flatten(value, f"{prefix}{key}."))
    return {key.rstrip("."): value for key, value in flat.items()}


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved config.yaml (Hydra's composed one if absent), flattened; {} when there is none."""
    for path in (run_dir / "config.yaml", run_dir / ".hydra" / "config.yaml"):
        if path.is_file():
            try:
                return flatten(OmegaConf.to_container(OmegaConf.load(path), resolve=False))
            except Exception:  # noqa: BLE001 - an unreadable config only costs its columns
                return {}
    return {}


def unfinished_state(run_dir: Path) -> str | None:
    """How a run without metrics.json ended: its ``failed.json`` line, or interrupted (a checkpoint, no metrics)."""
    if (run_dir / "metrics.json").exists():
        return None
    try:
        failure = json.loads((run_dir / FAILED).read_text())
        return f"failed ({failure.get('status')}): {failure.get('message', '')}"
    except (OSError, ValueError, AttributeError):
        return "interrupted (checkpoint kept, no metrics.json): run the same command again to continue"


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return metrics if isinstance(metrics, dict) else None


def differing_keys(configs: Sequence[dict[str, Any]]) -> list[str]:
    keys = list(dict.fromkeys(key for config in configs for key in config))
    return [key for key in keys if len({repr(config.get(key, MISSING)) for config in configs}) > 1]


def _short(key: str) -> str:
    return key.removesuffix(".name")


def label_keys(configs: Sequence[dict[str, Any]], differing: Sequence[str]) -> list[str]:
    """The differing keys worth a legend: drop ``g.x`` when ``g.name`` differs and fixes ``g.x`` (e.g. the method's
    own hyper-parameters in a sweep over methods)."""
    keep = []
    for key in differing:
        group = key.split(".")[0]
        name_key = f"{group}.name"
        if key != name_key and name_key in differing:
            by_name: dict[str, set[str]] = {}
            for config in configs:
                by_name.setdefault(repr(config.get(name_key)), set()).add(repr(config.get(key, MISSING)))
            if all(len(values) == 1 for values in by_name.values()):
                continue
        keep.append(key)
    return keep


def collect(paths: Sequence[Path]) -> Collected:
    runs, skipped = [], []
    for run_dir in find_run_dirs(paths):
        state = unfinished_state(run_dir)
        metrics = {"state": state} if state else read_metrics(run_dir)
        if metrics is None:
            skipped.append(run_dir)
        else:
            runs.append(Run(run_dir, config=read_config(run_dir), metrics=metrics))
    if any("state" in run.metrics for run in runs):
        for run in runs:
            run.metrics = {"state": "finished", **run.metrics} if "state" not in run.metrics else run.metrics
    if not runs:
        raise ValueError(f"no readable metrics.json under {', '.join(map(str, paths))} ({len(skipped)} unreadable)")
    common = Path(os.path.commonpath([run.path.resolve() for run in runs]))
    for run in runs:
        relative = os.path.relpath(run.path.resolve(), common)
        run.name = run.path.resolve().name if relative == "." else relative
    differing = differing_keys([run.config for run in runs])
    shown = label_keys([run.config for run in runs], differing)
    for run in runs:
        parts = [f"{_short(key)}={run.config[key]}" for key in shown if key in run.config]
        run.label = " ".join(parts) or run.name
    labels = [run.label for run in runs]
    for run in runs:
        if labels.count(run.label) > 1:
            run.label = f"{run.label} ({run.name})" if run.label != run.name else run.name
    return Collected(runs, skipped, differing)


def metric_keys(runs: Iterable[Run]) -> list[str]:
    return list(dict.fromkeys(key for run in runs for key in run.metrics))


def rows(collected: Collected) -> tuple[list[str], list[list[Any]]]:
    """Header and raw cell values (None where a run lacks the key)."""
    metrics = metric_keys(collected.runs)
    header = ["run", *collected.differing, *metrics]
    body = []
    for run in collected.runs:
        config = [run.config.get(key) for key in collected.differing]
        body.append([run.name, *config, *(run.metrics.get(key) for key in metrics)])
    return header, body


def fmt(value: Any) -> str:
    """Metrics: 4 decimals (accuracies line up), 1 above 100, 3 significant digits below 0.001; the rest as is."""
    if value is None:
        return ""
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.1f}"
        return f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.3g}"
    return str(value)


def markdown(header: Sequence[str], body: Sequence[Sequence[Any]], exact: int = 0) -> str:
    """A Markdown table; the first ``exact`` columns (run and config values) are written as they are."""

    def line(cells: Iterable[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    aligns = ["---:" if any(_numeric(row[i]) for row in body) else "---" for i in range(len(header))]
    cells = [[("" if v is None else str(v)) if i < exact else fmt(v) for i, v in enumerate(row)] for row in body]
    return "\n".join([line(header), line(aligns), *(line(row) for row in cells)]) + "\n"


def write(collected: Collected, out: Path) -> list[Path]:
    header, body = rows(collected)
    md, table_csv = out / "report.md", out / "report.csv"
    md.write_text(markdown(header, body, exact=1 + len(collected.differing)))
    with table_csv.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in row] for row in body])
    return [md, table_csv]


def rich_table(collected: Collected, title: str, width: int = 80) -> Table:
    """The terminal's table. Fewer runs than metrics: one column per run, one row per metric.
    Else one row per run with the HEADLINE metrics that fit ``width`` columns.
    report.md and report.csv carry every metric, the run paths and every differing key."""
    runs, metrics = collected.runs, metric_keys(collected.runs)
    table = Table(title=title)
    if len(runs) < len(metrics):
        table.add_column("metric", no_wrap=True)
        for run in runs:
            table.add_column(escape(run.short), justify="right", overflow="fold")
        for key in metrics:
            table.add_row(escape(key), *(escape(fmt(run.metrics.get(key))) for run in runs))
        return table
    fit = max(2, (width - 28) // 12)  # room for a 24-character run name, ~12 characters a metric
    shown = ([key for key in HEADLINE if key in metrics] or metrics)[:fit]
    if len(shown) < len(metrics):
        table.caption = f"{len(shown)} of {len(metrics)} metrics; all of them in report.md / report.csv"
    names = [run.short for run in runs]
    table.add_column("run", overflow="fold", min_width=min(max(map(len, names)), 24))
    for key in shown:
        numeric = any(_numeric(run.metrics.get(key)) for run in runs)
        table.add_column(escape(key), justify="right" if numeric else "left", overflow="fold")
    for run, name in zip(runs, names, strict=True):
        table.add_row(escape(name), *(escape(fmt(run.metrics.get(key))) for key in shown))
    return table


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
