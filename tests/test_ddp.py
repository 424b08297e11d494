"""Same global batch, world size 1 vs 2 (Lightning DDP on CPU, gloo): equal loss and equal parameters after one
SGD step, i.e. equal gradients on every parameter. Catches missing gathers, wrong positives or self-masks on
rank 1 and gradients scaled by 1/world_size."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


def run_worker(tmp_path: Path, method: str, devices: int, backend: str) -> dict:
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
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out, weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["chunked", "naive"])
def test_contrastive_ddp_equals_single_process(tmp_path, backend):
    single = run_worker(tmp_path, "contrastive", 1, backend)
    double = run_worker(tmp_path, "contrastive", 2, backend)
    assert double["loss"] == pytest.approx(single["loss"], rel=1e-5)
    for name, after_single in single["params"].items():
        torch.testing.assert_close(double["params"][name], after_single, rtol=1e-4, atol=1e-6, msg=name)
        assert not torch.equal(after_single, single["init"][name]), f"{name} did not move: the comparison means nothing"
