"""Same global batch, world size 1 vs 2 (Lightning DDP on CPU, gloo), for every method: equal loss and equal
parameters after one SGD step, i.e. equal gradients on every parameter. Catches missing gathers, wrong positives
or self-masks on rank 1 and gradients scaled by 1/world_size."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sslrun.methods import METHODS

WORKER = Path(__file__).parents[1] / "helpers" / "ddp_worker.py"
FIXED_BUFFERS = {"permutations"}  # jigsaw's permutation set: part of the state, constant by design


def run_worker(tmp_path: Path, method: str, devices: int, backend: str, backbone: str | None = None) -> dict:
    out = tmp_path / f"{method}-{backend}-{devices}.pt"
    cmd = [
        sys.executable,
        str(WORKER),
        "--method",
        method,
        "--devices",
        str(devices),
        "--backend",
        backend,
        "--out",
        str(out),
        *(["--backbone", backbone] if backbone else []),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = torch.load(out, weights_only=True)
    result["ranks"] = [result] + [torch.load(f"{out}.rank{rank}", weights_only=True) for rank in range(1, devices)]
    return result


def assert_same_step(single: dict, double: dict) -> None:
    assert double["loss"] == pytest.approx(single["loss"], rel=1e-5)
    for rank, state in enumerate(double["ranks"]):
        for name, after_single in single["params"].items():
            torch.testing.assert_close(
                state["params"][name],
                after_single,
                rtol=1e-4,
                atol=1e-6,
                msg=lambda m, k=name, r=rank: f"{k} rank {r}: {m}",
            )
    for name, after_single in single["params"].items():
        if name in FIXED_BUFFERS:
            continue
        assert not torch.equal(after_single, single["init"][name]), f"{name} did not move: the comparison means nothing"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["chunked", "naive"])
def test_contrastive_ddp_equals_single_process(tmp_path, backend):
    assert_same_step(run_worker(tmp_path, "contrastive", 1, backend), run_worker(tmp_path, "contrastive", 2, backend))


@pytest.mark.slow
@pytest.mark.parametrize("method", [name for name in METHODS.names() if name != "contrastive"])
def test_method_ddp_equals_single_process(tmp_path, method):
    """Every parameter and buffer (teachers after their EMA step, queues after their enqueue, DINO's centre) is the
    single-process one on both ranks: a queue that enqueued only its rank's keys would differ on rank 1."""
    assert_same_step(run_worker(tmp_path, method, 1, "naive"), run_worker(tmp_path, method, 2, "naive"))


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["timm:regnetx_002", "torchvision:resnet18"])  # mobilenet: tiny gradients
def test_library_backbone_ddp_equals_single_process(tmp_path, backbone):
    single = run_worker(tmp_path, "contrastive", 1, "naive", backbone)
    assert_same_step(single, run_worker(tmp_path, "contrastive", 2, "naive", backbone))
