"""Learning curves of every method against a random init: each method pretrained at several budgets (epochs) on one
dataset, each encoder evaluated by ``sslrun finetune mode=linear`` (linear-probe and kNN top-1 on the held-out
split) beside the random init under the same protocol; per method, "epochs to beat random init" on the linear probe
(interpolated between budgets, "<= first" or "> last").

    python scripts/learning_curves.py --out runs/curves --budgets 8 30 --extend 60 \\
        --seeds 0 --more-seeds 0 1 2 --more-seeds-for random byol dino simsiam adversarial_autoencoder gan jigsaw \\
        --results results/learning_curves.jsonl --png docs/img/learning_curves.png --needs sslrun/method_needs.json

Resumable: a run whose ``metrics.json`` exists under ``--out`` is read back, and so is one whose figures a row of
``--results`` holds (per seed, with the same overrides): the run dirs of an earlier session need not be there, so
the sweep (hours of CPU) can be spread over sessions; it works budget by budget (every method at the first budget, then
the next), one training at a time. ``--extend E`` adds a budget of E epochs for the methods still below the random
init at the last budget. ``--collect`` trains nothing: it builds the table, the PNG and the needs file from what
exists. ``--results`` appends a row per (method, budget) once all of its seeds exist (not again on a rerun);
``--needs`` writes what ``sslrun list`` and the start-of-run warning read.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

from compare_methods import methods_from_registry, sslrun
from provenance import append_row, provenance, this_command

DEFAULT_BOTH = ["data=fashion_mnist", "backbone=resnet18", "backbone.width=0.25"]
# The header line --results starts a new file with (docs/results.md's table of it).
HEADER = {
    "title": "Learning curves: each method against a random init (embedded Fashion-MNIST)",
    "protocol": (
        "`scripts/learning_curves.py` pretrains each method with its defaults on the embedded `fashion_mnist` "
        "(8,000 train / 2,000 held-out 28x28 images), `backbone=resnet18 backbone.width=0.25`, for each "
        "budget in `trainer.max_epochs`, and evaluates the encoder with `sslrun finetune mode=linear` "
        "(frozen: linear-probe top-1 and kNN top-1, k=20, T=0.1, on the held-out split) beside a random-init "
        "encoder under the same protocol. `gain` is the method's mean minus the random init's mean. `epochs "
        "to beat random` interpolates linearly between budgets where the linear-probe gain crosses zero (`<= "
        "E`: already above at the first budget; `> E`: below at every budget measured). Seeds are listed per "
        "row; rows of a sweep still running cover the budgets done so far."
    ),
    "key": ["method", "epochs", "variant"],
    "columns": [
        {"field": "method", "label": "method"},
        {"field": "variant", "label": "pretrain overrides"},
        {"field": "epochs", "label": "epochs", "format": 0},
        {"field": "seeds", "label": "seeds"},
        {"field": "linear_top1", "label": "linear top-1", "format": 3, "std": "linear_top1_std"},
        {"field": "random_linear_top1", "label": "random init linear", "format": 3, "std": "random_linear_top1_std"},
        {"field": "linear_gain", "label": "linear gain", "format": 3},
        {"field": "knn_top1", "label": "kNN top-1", "format": 3, "std": "knn_top1_std"},
        {"field": "knn_gain", "label": "kNN gain", "format": 3},
        {"field": "epochs_to_beat_random", "label": "epochs to beat random"},
    ],
}


def variant_suffix(pretrain: list[str]) -> str:
    """The run-dir suffix of a variant (its pretrain overrides, ``method.`` dropped, "=" and other characters Hydra
    would parse in hydra.run.dir as "-"): variants of one method, budget
    and seed keep apart under one ``--out``; the defaults have none, as their dirs always had."""
    return "".join("+" + re.sub(r"[^A-Za-z0-9_.-]", "-", o.removeprefix("method.")) for o in pretrain)


def run_cell(out: Path, method: str, epochs: int, seed: int, args: argparse.Namespace, train: bool) -> dict | None:
    """Linear-probe metrics of ``method`` pretrained ``epochs`` epochs with ``seed`` (random: no pretraining);
    None when not there and ``train`` is false, or when a run failed."""
    common = [f"seed={seed}", *args.both]
    recorded = args.recorded.get((method, 0 if method == "random" else epochs, seed))
    name = f"{method}-e{epochs}-s{seed}{variant_suffix(args.pretrain)}"
    here = out / (f"random-s{seed}-linear" if method == "random" else f"{name}-linear")
    if recorded is not None and not (here / "metrics.json").is_file():
        return recorded  # measured in an earlier session: its run dirs are gone, its figures are in --results
    if method == "random":
        tune = out / f"random-s{seed}-linear"
        if not train and not (tune / "metrics.json").is_file():
            return None
        return sslrun(tune, "finetune", "mode=linear", "pretrained=none", *common) or None
    pre, tune = out / name, here
    if not train and not (tune / "metrics.json").is_file():
        return None
    pretrained = sslrun(pre, "pretrain", f"method={method}", f"trainer.max_epochs={epochs}", *common, *args.pretrain)
    if not pretrained:
        return None
    return sslrun(tune, "finetune", "mode=linear", f"pretrained={pre}", *common) or None


def recorded_runs(path: str | None, args: argparse.Namespace) -> dict:
    """{(method, epochs, seed): {"top1", "knn_top1", "labelled_images"}} from the per-seed figures of the rows in
    ``--results`` with these same overrides (random init under epochs 0): what an earlier session measured."""
    found: dict = {}
    if not path or not Path(path).is_file():
        return found
    for line in Path(path).read_text().splitlines()[1:]:
        row = json.loads(line)
        if row.get("both_overrides") != args.both or row.get("pretrain_overrides") != args.pretrain:
            continue
        for seed, linear, knn in row.get("per_seed", []):
            found[(row["method"], row["epochs"], seed)] = {
                "top1": linear, "knn_top1": knn, "labelled_images": row.get("train_images")
            }  # fmt: skip
        for seed, linear, knn in row.get("random_per_seed", []):
            found[("random", 0, seed)] = {"top1": linear, "knn_top1": knn}
    return found


def seeds_of(method: str, args: argparse.Namespace) -> list[int]:
    return args.more_seeds if method in args.more_seeds_for else args.seeds


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def epochs_to_beat(points: list[tuple[int, float]]) -> str | float:
    """``points``: (epochs, linear top-1 minus random init's), by epochs. The first crossing above zero, linearly
    interpolated; "<= E" when the first budget already beats it, "> E" when none does."""
    if not points:
        return "unmeasured"
    if points[0][1] > 0:
        return f"<= {points[0][0]}"
    for (e0, d0), (e1, d1) in zip(points, points[1:], strict=False):
        if d1 > 0:
            return round(e0 + (e1 - e0) * (-d0) / (d1 - d0), 1)
    return f"> {points[-1][0]}"


def collect(out: Path, methods: list[str], budgets: list[int], args: argparse.Namespace, train: bool) -> dict:
    """{"random": {"linear": [...], "knn": [...]}, method: {epochs: {"linear": [...], "knn": [...], "seeds": [...]}}}"""
    found: dict = {"random": {"linear": [], "knn": [], "seeds": []}}
    for seed in seeds_of("random", args):
        got = run_cell(out, "random", 0, seed, args, train)
        if got:
            found["random"]["linear"].append(got["top1"])
            found["random"]["knn"].append(got["knn_top1"])
            found["random"]["seeds"].append(seed)
    for epochs in budgets:  # budget by budget: a partial sweep is a whole first budget
        for method in methods:
            if epochs in args.extended and not below_random(found, method):
                continue
            cell: dict = {"linear": [], "knn": [], "seeds": []}
            for seed in seeds_of(method, args):
                got = run_cell(out, method, epochs, seed, args, train)
                if got:
                    cell["train_images"] = got.get("labelled_images")
                    cell["linear"].append(got["top1"])
                    cell["knn"].append(got["knn_top1"])
                    cell["seeds"].append(seed)
            if cell["seeds"]:
                found.setdefault(method, {})[epochs] = cell
                if train:
                    print(f"{method} {epochs} epochs: linear {cell['linear']} kNN {cell['knn']}", flush=True)
                    record(found, method, args)  # at once: a sweep cut off keeps every cell it finished
    return found


def record(found: dict, method: str, args: argparse.Namespace) -> None:
    """Append ``method``'s rows not yet in ``--results`` (with provenance)."""
    if not args.results:
        return
    path = Path(args.results)
    table = rows(found, [method], args)
    if not path.is_file() and table:
        path.write_text(json.dumps({"table": HEADER}) + "\n")
    # --collect only reads what the same command without it trained: the row names that command
    origin = provenance(this_command().replace(" --collect", ""))
    for row in table:
        if not already_recorded(path, row):
            append_row(path, row | origin)


def below_random(found: dict, method: str) -> bool:
    """Whether the method's mean linear top-1 at its largest budget so far is not above the random init's."""
    cells = found.get(method, {})
    if not cells or not found["random"]["linear"]:
        return True
    last = cells[max(cells)]
    return statistics.mean(last["linear"]) <= statistics.mean(found["random"]["linear"])


def rows(found: dict, methods: list[str], args: argparse.Namespace) -> list[dict]:
    random_linear, random_linear_std = mean_std(found["random"]["linear"])
    random_knn, _ = mean_std(found["random"]["knn"])
    out = []
    for method in methods:
        cells = found.get(method, {})
        points = []
        for epochs in sorted(cells):
            linear, linear_std = mean_std(cells[epochs]["linear"])
            knn, knn_std = mean_std(cells[epochs]["knn"])
            if random_linear is not None:
                points.append((epochs, linear - random_linear))
            out.append(
                {
                    "method": method,
                    "epochs": epochs,
                    "seeds": cells[epochs]["seeds"],
                    "per_seed": [
                        list(v) for v in zip(*(cells[epochs][k] for k in ("seeds", "linear", "knn")), strict=True)
                    ],
                    "random_per_seed": [
                        list(v) for v in zip(*(found["random"][k] for k in ("seeds", "linear", "knn")), strict=True)
                    ],
                    "both_overrides": list(args.both),
                    "pretrain_overrides": list(args.pretrain),
                    "variant": " ".join(args.pretrain) or "defaults",
                    "train_images": cells[epochs].get("train_images"),
                    "linear_top1": linear,
                    "linear_top1_std": linear_std,
                    "knn_top1": knn,
                    "knn_top1_std": knn_std,
                    "random_linear_top1": random_linear,
                    "random_linear_top1_std": random_linear_std,
                    "random_knn_top1": random_knn,
                    "random_seeds": found["random"]["seeds"],
                    "linear_gain": None if random_linear is None else linear - random_linear,
                    "knn_gain": None if random_knn is None else knn - random_knn,
                }
            )
        for row in out:
            if row["method"] == method:
                row["epochs_to_beat_random"] = epochs_to_beat(points)
    return out


def already_recorded(path: Path, row: dict) -> bool:
    if not path.is_file():
        return False
    for line in path.read_text().splitlines():
        old = json.loads(line)
        same = all(old.get(k) == row[k] for k in ("method", "epochs", "variant", "both_overrides"))
        if same:
            keys = ("seeds", "random_seeds", "epochs_to_beat_random")
            if all(old.get(k) == row[k] for k in keys):
                return True
    return False


def write_png(found: dict, methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    random_linear, _ = mean_std(found["random"]["linear"])
    for method in methods:
        cells = found.get(method, {})
        if cells:
            xs = sorted(cells)
            ax.plot(xs, [statistics.mean(cells[x]["linear"]) for x in xs], marker="o", label=method)
    if random_linear is not None:
        ax.axhline(random_linear, color="black", linestyle="--", label="random init")
    ax.set_xlabel("pretraining epochs")
    ax.set_ylabel("linear-probe top-1 (held-out)")
    ax.set_title("fashion_mnist, resnet18 width 0.25: linear probe against pretraining epochs")
    ax.legend(fontsize=7, ncol=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_needs(table: list[dict], path: Path, args: argparse.Namespace) -> None:
    """Per method, the epochs it needed to beat a random init, and on what: read by ``sslrun list`` and by the
    start-of-run warning (``sslrun.method_needs``)."""
    needs = {}
    for row in table:
        needs[row["method"]] = {
            "epochs_to_beat_random": row["epochs_to_beat_random"],
            "measured_on": " ".join(args.both),
            "train_images": row.get("train_images"),
            "budgets": sorted({r["epochs"] for r in table if r["method"] == row["method"]}),
        }
    path.write_text(json.dumps({"source": "scripts/learning_curves.py", "methods": needs}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/curves")
    parser.add_argument("--methods", nargs="*", help="default: every registered method")
    parser.add_argument("--budgets", nargs="*", type=int, default=[8, 30])
    parser.add_argument("--extend", type=int, help="one more budget for the methods still below random init")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--more-seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--more-seeds-for", nargs="*", default=[], help="methods (and 'random') run with --more-seeds")
    parser.add_argument("--both", nargs="*", default=DEFAULT_BOTH, help="overrides for pretrain and finetune")
    parser.add_argument("--pretrain", nargs="*", default=[], help="overrides for pretrain only")
    parser.add_argument("--collect", action="store_true", help="train nothing: tables from the runs that exist")
    parser.add_argument("--results", help="append a row per (method, budget) to this results/*.jsonl file")
    parser.add_argument("--png", help="write the curves here")
    parser.add_argument("--needs", help="write the measured needs here (sslrun/method_needs.json)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods = args.methods or methods_from_registry()
    args.recorded = recorded_runs(args.results, args)
    args.extended = [args.extend] if args.extend else []
    budgets = sorted(set(args.budgets)) + args.extended
    found = collect(out, methods, budgets, args, train=not args.collect)
    table = rows(found, methods, args)
    for method in methods:
        record(found, method, args)
    if args.png:
        write_png(found, methods, Path(args.png))
    if args.needs:
        write_needs(table, Path(args.needs), args)
    for row in table:
        print(json.dumps(row), file=sys.stdout)


if __name__ == "__main__":
    main()
