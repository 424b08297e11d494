"""``sslrun report``: the table logic on hand-made run dirs, user errors, and a real 4-run sweep end to end."""

import csv
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers.cli import TINY, assert_user_error
from helpers.cli import sslrun as run_sslrun
from sslrun.report import main, table
from sslrun.report.plots import read_curves


def make_run(root: Path, name: str, config: dict, metrics: dict | str) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    return run


def config(method: str, lr: float, **method_keys) -> dict:
    return {"method": {"name": method, **method_keys}, "optim": {"name": "lars", "lr": lr}, "seed": 0}


def md_cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_differing_keys_come_first_and_constant_keys_are_left_out(tmp_path):
    make_run(tmp_path / "sweep", "0_a", config("contrastive", 0.1, temperature=0.2), {"knn_top1": 0.5, "rankme": 3.0})
    make_run(tmp_path / "sweep", "1_b", config("byol", 0.1), {"knn_top1": 0.25, "img_per_s": 100.0})
    make_run(tmp_path / "sweep", "10_c", config("byol", 0.2), {"knn_top1": 0.75})
    collected = table.collect([tmp_path / "sweep"])
    header, body = table.rows(collected)
    assert header == ["run", "method.name", "method.temperature", "optim.lr", "knn_top1", "rankme", "img_per_s"]
    assert [row[0] for row in body] == ["0_a", "1_b", "10_c"]  # natural order of Hydra's job numbers
    assert body[1] == ["1_b", "byol", None, 0.1, 0.25, None, 100.0]
    # the legend names a run by the keys that tell it apart; the temperature follows from the method
    assert [run.label for run in collected.runs] == [
        "method=contrastive optim.lr=0.1",
        "method=byol optim.lr=0.1",
        "method=byol optim.lr=0.2",
    ]
    lines = table.markdown(header, body, exact=4).splitlines()  # config values as written, metrics formatted
    assert len(lines) == 5
    assert md_cells(lines[0]) == header
    assert md_cells(lines[3]) == ["1_b", "byol", "", "0.1", "0.2500", "", "100.0"]


def test_one_run_has_no_config_columns(tmp_path):
    run = make_run(tmp_path, "solo", config("byol", 0.1), {"top1": 0.5, "mode": "linear"})
    header, body = table.rows(table.collect([run]))
    assert header == ["run", "top1", "mode"] and body == [["solo", 0.5, "linear"]]


def test_broken_metrics_json_is_counted_and_the_rest_reported(tmp_path, capsys):
    make_run(tmp_path / "runs", "a", config("byol", 0.1), {"knn_top1": 0.5})
    make_run(tmp_path / "runs", "b", config("byol", 0.2), {"knn_top1": 0.6})
    make_run(tmp_path / "runs", "c", config("byol", 0.3), '{"knn_top1": 0.')
    make_run(tmp_path / "runs", "d", config("byol", 0.4), "[1, 2]")
    (tmp_path / "runs" / "a" / "csv").mkdir()
    (tmp_path / "runs" / "a" / "csv" / "metrics.csv").write_text(
        "epoch,knn_top1,step,train_loss\n0,0.4,9,2.0\n1,0.5,19,1.5\n"
    )
    main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--no-images"])
    err = " ".join(capsys.readouterr().err.split())
    assert "skipped 2 run dir(s) with an unreadable metrics.json" in err, err
    with (tmp_path / "out" / "report.csv").open() as file:
        rows = list(csv.reader(file))
    assert rows == [["run", "optim.lr", "knn_top1"], ["a", "0.1", "0.5"], ["b", "0.2", "0.6"]]
    assert (tmp_path / "out" / "curves.png").stat().st_size > 0


def test_failed_and_interrupted_runs_are_listed_with_their_state(tmp_path):
    """Once, a report of a sweep with a diverged and an interrupted job said "1 run(s)" and named neither."""
    make_run(tmp_path / "sweep", "0_done", config("byol", 0.1), {"knn_top1": 0.5})
    failed = make_run(tmp_path / "sweep", "1_failed", config("byol", 1e30), "{}")
    (failed / "metrics.json").unlink()
    (failed / "failed.json").write_text(json.dumps({"status": 3, "message": "training diverged: the loss is nan"}))
    cut = make_run(tmp_path / "sweep", "2_cut", config("byol", 0.3), "{}")
    (cut / "metrics.json").unlink()
    (cut / "checkpoints").mkdir()
    (cut / "checkpoints" / "last.ckpt").write_bytes(b"not read")
    main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out"), "--no-images"])
    with (tmp_path / "out" / "report.csv").open() as file:
        rows = {row["run"]: row for row in csv.DictReader(file)}
    assert rows["0_done"]["state"] == "finished" and rows["0_done"]["knn_top1"] == "0.5"
    assert rows["1_failed"]["state"] == "failed (3): training diverged: the loss is nan"
    assert rows["2_cut"]["state"].startswith("interrupted") and rows["2_cut"]["knn_top1"] == ""


def test_curves_keep_the_last_row_of_a_step_logged_twice(tmp_path):
    path = tmp_path / "metrics.csv"
    rows = ["epoch,knn_top1,step,train_loss", "0,0.3,9,2.0", "1,0.4,19,1.8", "1,0.45,19,1.7", "2,,29,1.6", "x,1,39,1"]
    path.write_text("\n".join(rows) + "\n")
    assert read_curves(path) == {"knn_top1": [(0, 0.3), (1, 0.45)], "train_loss": [(0, 2.0), (1, 1.7), (2, 1.6)]}


def sslrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # one thread: on a busy 2-core machine, OpenMP threads waiting on each other made these tiny runs 2x slower
    return run_sslrun(*args, cwd=cwd, threads=1)


def assert_one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert_user_error(proc, fragment)
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: "), proc.stderr


def test_a_missing_path_is_a_user_error(tmp_path):
    assert_one_line_error(sslrun("report", str(tmp_path / "nope"), cwd=tmp_path), "nope does not exist")


def test_a_report_never_writes_into_a_runs_checkpoints(tmp_path):
    run = make_run(tmp_path, "run", config("contrastive", 0.3), {"knn_top1": 0.5})
    (run / "checkpoints").mkdir()
    proc = sslrun("report", str(run), "--out", str(run / "checkpoints"), cwd=tmp_path)
    assert_one_line_error(proc, "is inside the checkpoints of run")
    assert list((run / "checkpoints").iterdir()) == []


def test_a_dir_without_runs_is_a_user_error(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    proc = sslrun("report", str(tmp_path / "empty"), cwd=tmp_path)
    assert_one_line_error(proc, "no metrics.json under")


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    root = tmp_path_factory.mktemp("report")
    sweep = root / "sweep"
    proc = sslrun("pretrain", "-m", "method=contrastive,byol", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}", cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = sslrun("report", str(sweep), cwd=root)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    return report, sweep / "report"  # the default --out for one dir


def test_sweep_table_has_a_row_per_run_and_the_swept_keys_first(sweep_report):
    _, out = sweep_report
    lines = (out / "report.md").read_text().splitlines()
    assert len(lines) == 2 + 4
    header = md_cells(lines[0])
    metrics = header.index("knn_top1")
    config_columns = header[1 : header.index("data_wait_share")]
    assert header[0] == "run" and "method.name" in config_columns and "seed" in config_columns
    assert "method.temperature" in config_columns  # contrastive only: differs (absent in byol)
    for constant in ("backbone.name", "data.limit", "trainer.max_steps", "optim.lr"):
        assert constant not in header
    assert {"linear_top1", "train_loss", "rankme"} <= set(header[metrics:])
    rows = [md_cells(line) for line in lines[2:]]
    assert [row[header.index("method.name")] for row in rows] == ["contrastive", "contrastive", "byol", "byol"]
    assert [row[header.index("seed")] for row in rows] == ["0", "1", "0", "1"]
    assert [row[0][:2] for row in rows] == ["0_", "1_", "2_", "3_"]
    with (out / "report.csv").open() as file:
        assert len(list(csv.reader(file))) == 5


def test_sweep_plots_are_written(sweep_report):
    from matplotlib.image import imread

    proc, out = sweep_report
    labels = ["method=contrastive_seed=0", "method=contrastive_seed=1", "method=byol_seed=0", "method=byol_seed=1"]
    kinds = ("embedding", "retrieval")
    pngs = [out / "curves.png"] + [out / f"{kind}_{label}.png" for label in labels for kind in kinds]
    for png in pngs:
        image = imread(png)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200, (png, image.shape)
        assert image[..., :3].std() > 0.05, png  # not a blank canvas
        assert str(png) in proc.stdout.replace("\n", "")
    assert sorted(p.name for p in out.glob("*.png")) == sorted(p.name for p in pngs)
