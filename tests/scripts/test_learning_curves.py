"""scripts/learning_curves.py: epochs to beat a random init from the budgets measured, and the needs file it writes
is what sslrun.method_needs reads."""

import argparse
import json

import pytest

from helpers.processes import script_module
from sslrun import method_needs


@pytest.fixture
def curves(monkeypatch):
    with script_module(monkeypatch, "learning_curves") as module:
        yield module


def test_epochs_to_beat_random_interpolates_between_budgets(curves):
    assert curves.epochs_to_beat([(8, -0.02), (30, 0.02)]) == 19.0
    assert curves.epochs_to_beat([(8, 0.01), (30, 0.05)]) == "<= 8"
    assert curves.epochs_to_beat([(8, -0.05), (30, -0.01), (60, -0.001)]) == "> 60"
    assert curves.epochs_to_beat([]) == "unmeasured"


def test_the_needs_file_feeds_the_start_of_run_warning(curves, tmp_path, monkeypatch):
    found = {
        "random": {"linear": [0.75, 0.76, 0.74], "knn": [0.74, 0.74, 0.75], "seeds": [0, 1, 2]},
        "byol": {
            8: {"linear": [0.73], "knn": [0.70], "seeds": [0], "train_images": 8000},
            30: {"linear": [0.77], "knn": [0.78], "seeds": [0], "train_images": 8000},
        },
    }
    args = argparse.Namespace(both=["data=fashion_mnist"], pretrain=[])
    table = curves.rows(found, ["byol"], args)
    assert [r["epochs"] for r in table] == [8, 30]
    assert table[0]["linear_gain"] == pytest.approx(-0.02) and table[1]["epochs_to_beat_random"] == 19.0
    path = tmp_path / "method_needs.json"
    curves.write_needs(table, path, args)
    assert json.loads(path.read_text())["methods"]["byol"]["train_images"] == 8000
    monkeypatch.setattr(method_needs, "NEEDS", path)
    method_needs.measured.cache_clear()
    try:
        assert "needed about 19 epochs" in method_needs.warning("byol", 8, 8000)
    finally:
        method_needs.measured.cache_clear()


def test_a_later_session_reads_the_measured_seeds_back_from_the_results_rows(curves, tmp_path):
    """Run dirs do not outlive a session's checkout; the per-seed figures in --results let the sweep go on."""
    found = {
        "random": {"linear": [0.75, 0.76], "knn": [0.74, 0.75], "seeds": [0, 1]},
        "gan": {8: {"linear": [0.70], "knn": [0.64], "seeds": [0], "train_images": 8000}},
    }
    args = argparse.Namespace(both=["data=fashion_mnist"], pretrain=[])
    results = tmp_path / "curves.jsonl"
    results.write_text(json.dumps({"table": curves.HEADER}) + "\n")
    for row in curves.rows(found, ["gan"], args):
        results.open("a").write(json.dumps(row) + "\n")
    recorded = curves.recorded_runs(str(results), args)
    assert recorded[("gan", 8, 0)]["top1"] == 0.70 and recorded[("random", 0, 1)]["knn_top1"] == 0.75
    other = argparse.Namespace(both=["data=fashion_mnist"], pretrain=["method.real_label=0.9"])
    assert curves.recorded_runs(str(results), other) == {}  # another variant's figures are not these


def test_variants_of_one_method_budget_and_seed_train_in_their_own_dirs(curves, tmp_path, monkeypatch):
    """A variant must not read back the defaults' (or another variant's) run: each has its own pretrain dir."""
    calls = []

    def fake_sslrun(run_dir, *cli):
        calls.append(run_dir.name)
        return {"top1": 0.8, "knn_top1": 0.7}

    monkeypatch.setattr(curves, "sslrun", fake_sslrun)
    for pretrain in ([], ["method.r1_gamma=1"], ["method.r1_gamma=1", "method.diffaugment=true"]):
        args = argparse.Namespace(both=["data=fashion_mnist"], pretrain=pretrain, recorded={})
        curves.run_cell(tmp_path, "gan", 8, 0, args, train=True)
    assert calls == [
        "gan-e8-s0", "gan-e8-s0-linear",
        "gan-e8-s0+r1_gamma-1", "gan-e8-s0+r1_gamma-1-linear",
        "gan-e8-s0+r1_gamma-1+diffaugment-true", "gan-e8-s0+r1_gamma-1+diffaugment-true-linear",
    ]  # fmt: skip
