"""Same global batch, world size 1 vs 2 (Lightning DDP on CPU, gloo), for every method: equal loss and equal
parameters after one SGD step, i.e. equal gradients on every parameter. Catches missing gathers, wrong positives
or self-masks on rank 1 and gradients scaled by 1/world_size."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.processes import free_port
from sslrun.methods import METHODS

WORKER = Path(__file__).parents[1] / "helpers" / "ddp_worker.py"
FIXED_BUFFERS = {"permutations"}  # jigsaw's permutation set: part of the state, constant by design
# contrastive with both loss backends, every other method, and one library model of each kind
JOBS = [
    "contrastive:chunked",
    "contrastive:naive",
    *[name for name in METHODS.names() if name != "contrastive"],
    "contrastive:naive:timm:regnetx_002",
    "contrastive:naive:torchvision:resnet18",  # mobilenet: tiny gradients
]


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> dict[int, Path]:
    """Every job at world size 1 and at 2: one launch each (the processes import torch once, not once per job)."""
    out = {}
    for devices in (1, 2):
        folder = tmp_path_factory.mktemp(f"world{devices}")
        cmd = [sys.executable, str(WORKER), "--devices", str(devices), "--out", str(folder), *JOBS]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=folder)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[devices] = folder
    return out


def result(worlds: dict[int, Path], job: str, devices: int) -> dict:
    out = worlds[devices] / f"{job.replace(':', '-')}.pt"
    found = torch.load(out, weights_only=True)
    found["ranks"] = [found] + [torch.load(f"{out}.rank{rank}", weights_only=True) for rank in range(1, devices)]
    return found


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
@pytest.mark.parametrize("job", JOBS)
def test_ddp_equals_single_process(worlds, job):
    """Every parameter and buffer (teachers after their EMA step, queues after their enqueue, DINO's centre) is the
    single-process one on both ranks: a queue that enqueued only its rank's keys would differ on rank 1."""
    assert_same_step(result(worlds, job, 1), result(worlds, job, 2))


NODE_JOBS = ["contrastive:chunked", "byol"]  # the gathered loss, and an EMA teacher


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory) -> Path:
    """2 nodes x 1 process on this host: two launches of the worker, each with its NODE_RANK, one master address."""
    import os

    folder = tmp_path_factory.mktemp("nodes2")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    cmd = [sys.executable, str(WORKER), "--devices", "1", "--nodes", "2", "--out", str(folder), *NODE_JOBS]
    procs = [
        subprocess.Popen(cmd, env={**env, "NODE_RANK": str(node)}, cwd=folder, stderr=subprocess.PIPE, text=True)
        for node in (0, 1)
    ]
    errors = [proc.communicate(timeout=600)[1] for proc in procs]
    for proc, err in zip(procs, errors, strict=True):
        assert proc.returncode == 0, err[-3000:]
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("job", NODE_JOBS)
def test_two_nodes_on_one_host_equal_one_process(worlds, two_nodes, job):
    """trainer.num_nodes=2 with a node rank each: the node-rank-1 process is global rank 1 (it takes the second half
    of the batch), and the step equals the single-process one."""
    double = result({**worlds, 2: two_nodes}, job, 2)
    assert_same_step(result(worlds, job, 1), double)
