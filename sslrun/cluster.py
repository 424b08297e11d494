"""Where this process stands in a job of many: its rank from the environment a launcher gave it, the check that a
multi-node run has something to give each node its rank, and preemption (the signal a scheduler sends before it
takes the machine back: a checkpoint, then the job requeued, then the same run dir continued by ``resume=auto``)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from typing import Any

log = logging.getLogger(__name__)

# Variables that make a process other than the first of its job: Lightning's relaunched ranks (LOCAL_RANK), later
# nodes (NODE_RANK), torchrun (RANK), srun's tasks (SLURM_PROCID), submitit's local tasks.
RANK_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID")
# Any of these gives each node its rank: Lightning's own variable, torchrun, SLURM (srun with several tasks), LSF,
# Open MPI.
NODE_RANK_SOURCES = ("NODE_RANK", "GROUP_RANK", "SLURM_NTASKS", "LSB_JOBID", "OMPI_COMM_WORLD_RANK")


def process_rank() -> int:
    """The largest rank any launcher variable gives this process (0 for the first process of a job)."""
    ranks = []
    for key in RANK_VARIABLES:
        try:
            ranks.append(int(os.environ.get(key, "0")))
        except ValueError:
            ranks.append(0)
    return max(ranks)


def is_first_process() -> bool:
    return process_rank() == 0


def rank_suffix() -> str:
    """``""`` for the first process of a job, ``.rank<r>`` for the others: their own log file name."""
    rank = process_rank()
    return f".rank{rank}" if rank else ""


def check_nodes(num_nodes: int, launcher: str | None) -> None:
    """``trainer.num_nodes`` > 1 needs a launcher or an environment that gives each node its rank; without one,
    every node would start as node 0 and wait for the others forever."""
    if num_nodes <= 1 or (launcher and "slurm" in launcher):
        return
    if any(key in os.environ for key in NODE_RANK_SOURCES):
        return
    from sslrun.errors import UserError

    raise UserError(
        f"trainer.num_nodes={num_nodes} but nothing gives this node its rank: run it under SLURM "
        "(-m hydra/launcher=submitit_slurm, or srun), torchrun, or set NODE_RANK, MASTER_ADDR and MASTER_PORT on "
        "every node (docs/distributed.md#multi-node)"
    )


def check_slurm_launcher(partition: str | None) -> None:
    """Before a SLURM sweep is submitted: ``sbatch`` must exist here, and a partition must be named where the
    cluster has no default one."""
    from sslrun.errors import UserError

    if shutil.which("sbatch") is None:
        raise UserError(
            "hydra/launcher=submitit_slurm submits with SLURM's sbatch, which is not on this machine's PATH: run "
            "from a login node of the cluster, or use hydra/launcher=submitit_local to run the sweep here"
        )
    if partition:
        return
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return  # sinfo cannot tell: sbatch will apply the cluster's own rule
    partitions = [p.strip() for p in out.split() if p.strip()]
    if partitions and not any(p.endswith("*") for p in partitions):
        raise UserError(
            f"this cluster has no default partition: set hydra.launcher.partition to one of {', '.join(partitions)}"
        )


def preemption_signal() -> int:
    """The signal a scheduler sends ahead of a preemption or a time limit: submitit's (``SUBMITIT_PREEMPT_SIGNAL``,
    USR2 by default) in a submitit job, else SIGUSR1 (``sbatch --signal=USR1@120``)."""
    if in_submitit_job():
        name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
        return int(getattr(signal, f"SIG{name}", signal.SIGUSR2))
    return int(signal.SIGUSR1)


def in_submitit_job() -> bool:
    if "submitit" not in sys.modules:
        return False
    try:
        import submitit

        return bool(submitit.JobEnvironment().activated())
    except Exception:  # noqa: BLE001 - not a submitit job, whatever the reason
        return False


def on_slurm() -> bool:
    return "SLURM_JOB_ID" in os.environ


class Preemption:
    """Listens for the preemption signal while training (``start``/``stop``); ``requested`` says one came. The
    handler it displaced (submitit's, which requeues the job) is kept for ``requeue``."""

    def __init__(self) -> None:
        self.signum = preemption_signal()
        self.requested = False
        self.previous: Any = None

    def start(self) -> None:
        try:
            self.previous = signal.signal(self.signum, self._on_signal)
        except ValueError:  # not the main thread: no signal can reach this run
            self.previous = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.requested = True

    def stop(self) -> None:
        if self.previous is not None:
            signal.signal(self.signum, self.previous)

    def requeue(self, message: str = "") -> bool:
        """Requeue this job (the checkpoint is written by now): through submitit's own handler in a submitit job
        (it pickles the job again and requeues it; it exits the process), with ``scontrol requeue`` in a plain SLURM
        job. False where there is nothing to requeue with: the run just stops, as on SIGTERM."""
        if message:
            log.warning("%s", message)
        previous = self.previous
        if in_submitit_job() and callable(previous):
            log.info("preempted: the checkpoint is written; submitit requeues the job")
            previous(self.signum, None)  # exits (SystemExit) after the requeue on the first process
            return True
        if on_slurm() and is_first_process():
            job = os.environ.get("SLURM_ARRAY_JOB_ID")
            job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job else os.environ["SLURM_JOB_ID"]
            result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
            if result.returncode == 0:
                log.info("preempted: the checkpoint is written; requeued SLURM job %s", job)
                return True
            log.warning("scontrol requeue %s failed: %s", job, result.stderr.strip())
        return False
