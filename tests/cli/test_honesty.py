"""Telling the user before and after the run: the start-of-run line when a run is shorter than its method's
measured need, and the end-of-run verdict when the kNN monitor is not above the encoder the run started from."""

import json

import pytest

from helpers.cli import TINY, sslrun
from sslrun import method_needs


@pytest.fixture
def needs(tmp_path, monkeypatch):
    path = tmp_path / "method_needs.json"
    measured = {
        "byol": {"epochs_to_beat_random": 25.0, "measured_on": "data=fashion_mnist", "train_images": 8000},
        "gan": {"epochs_to_beat_random": "> 60", "measured_on": "data=fashion_mnist", "train_images": 8000},
        "contrastive": {"epochs_to_beat_random": "<= 8", "measured_on": "data=fashion_mnist", "train_images": 8000},
    }
    path.write_text(json.dumps({"methods": measured}))
    monkeypatch.setattr(method_needs, "NEEDS", path)
    method_needs.measured.cache_clear()
    yield
    method_needs.measured.cache_clear()


def test_a_run_shorter_than_its_methods_need_is_told(needs):
    line = method_needs.warning("byol", 8, 8000)
    assert "method=byol needed about 25 epochs to beat a random init on data=fashion_mnist" in line
    assert "this run has 8" in line
    assert method_needs.warning("byol", 30, 8000) is None  # long enough
    assert method_needs.warning("byol", 8, 100_000) is None  # far more data per epoch than measured
    assert "did not beat a random init within 60 epochs" in method_needs.warning("gan", 30, 8000)
    assert method_needs.warning("contrastive", 8, 8000) is None
    assert method_needs.warning("vicreg", 1, 8000) is None  # unmeasured: nothing to say
    assert "after ~25 epochs" in method_needs.describe("byol") and "below a random init" in method_needs.describe("gan")


@pytest.mark.slow
def test_the_initial_knn_is_measured_without_changing_the_run_and_an_unmoved_encoder_is_called_so(tmp_path):
    """eval.initial_knn measures the encoder at step 0 and puts the random states and batch-norm statistics back:
    the run trains as without it. With an lr of 1e-30, a ViT (no batch norm) ends as it began; the verdict says so."""
    runs = {}
    for flag in ("true", "false"):
        run = tmp_path / flag
        proc = sslrun("pretrain", *TINY, "trainer.max_steps=2", f"eval.initial_knn={flag}", f"hydra.run.dir={run}",
                      cwd=tmp_path)  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        runs[flag] = json.loads((run / "metrics.json").read_text())
    assert "knn_top1_initial" in runs["true"] and "knn_top1_initial" not in runs["false"]
    for key in ("train_loss", "knn_top1", "linear_top1"):
        assert runs["true"][key] == runs["false"][key], key

    vit = ["backbone=vit_tiny", "backbone.width=0.25", "optim=sgd", "optim.lr=1e-30", "optim.weight_decay=0"]
    proc = sslrun("pretrain", *TINY, *vit, "trainer.max_steps=1", f"hydra.run.dir={tmp_path / 'still'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "still" / "metrics.json").read_text())
    assert metrics["knn_top1"] == metrics["knn_top1_initial"]
    assert metrics["verdict"] == "kNN not above the starting encoder's"
    out = " ".join(proc.stdout.split()) + " ".join(proc.stderr.split())
    assert "NOT better than the starting encoder on kNN" in out and "gave no better features for kNN" in out
