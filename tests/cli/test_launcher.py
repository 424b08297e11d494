"""-m hydra/launcher=submitit_local: a sweep run as submitit jobs (as on SLURM, on this machine), and a job
preempted by the scheduler's signal that checkpoints, is requeued and continues its run dir and tracker run."""

import json
import os
import signal
import subprocess
import time

import pytest
import torch

from helpers.cli import SSLRUN, TINY, sslrun
from helpers.trackers import wandb_run


@pytest.mark.slow
def test_a_submitit_sweep_runs_each_job_in_its_own_run_dir(tmp_path):
    sweep = tmp_path / "sweep"
    proc = sslrun(
        "pretrain", "-m", "hydra/launcher=submitit_local", "optim.lr=0.1,0.2", *TINY, "trainer.max_steps=1",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    out = " ".join(proc.stdout.split())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert [p.name for p in runs] == ["0_optim.lr=0.1", "1_optim.lr=0.2"]
    assert "submitted 2 job(s) (local):" in out and all(f": {run}" in proc.stdout for run in runs)  # ids, run dirs
    assert "sweep: 2 job(s)" in out  # the summary has both jobs, though they ran in other processes
    for run in runs:
        assert json.loads((run / "metrics.json").read_text())["steps"] == 1
        assert (run / "pretrain.log").is_file() and not list(run.glob("*.rank*.log"))


@pytest.mark.slow
def test_a_preempted_job_checkpoints_is_requeued_and_continues_its_run(tmp_path):
    sweep = tmp_path / "sweep"
    args = [*TINY, "trainer.max_steps=-1", "trainer.limit_train_batches=1.0", "trainer.max_epochs=40"]
    args += ["eval.every_n_epochs=100", "logger=[csv,wandb]", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")} | {"HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [SSLRUN, "pretrain", "-m", "hydra/launcher=submitit_local", *args], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    run = sweep / "0"
    checkpoint, lock = run / "checkpoints" / "last.ckpt", run / ".sslrun.lock"
    deadline = time.monotonic() + 300
    while not (checkpoint.is_file() and lock.is_file()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.01)
    holder = json.loads(lock.read_text())["pid"]
    os.kill(holder, signal.SIGUSR2)  # submitit's preemption signal, as SLURM sends it ahead of the end
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-3000:]
    log = " ".join((run / "pretrain.log").read_text().split())
    assert "preempted (SIGUSR2) at step" in log and "submitit requeues the job" in log
    assert "resuming from" in log
    assert json.loads((run / "metrics.json").read_text())["steps"] == 40 * 4  # data.limit=64: 4 batches of 16
    info = torch.load(checkpoint, map_location="cpu", weights_only=True)["sslrun"]
    assert info["epochs_done"] == 40
    records = [wandb_run(f) for f in sorted(run.glob("wandb/offline-run-*/run-*.wandb"))]
    assert len(records) == 2 and {r["run_id"] for r in records} == {
        json.loads((run / "trackers.json").read_text())["wandb"]
    }
