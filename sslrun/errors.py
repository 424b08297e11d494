"""The exceptions the CLI turns into one line and an exit status, without a traceback: 2 a user error, 3 a diverged
run, 4 a fault of the machine (disk full, read-only), 128 + N a signal.

Library code (backbones, data, losses, methods) raises ``ValueError`` or ``TypeError`` with its own message; the CLI
(``sslrun.app``) prints any of them in one line and exits with status 2. ``UserError`` is the CLI's own: a config that
fails its schema or its pre-flight checks.
"""

import errno

FAILED = "failed.json"  # in the run dir of a job that failed within a sweep: its exit status and its one line


class UserError(ValueError):
    """A mistake in the user's input (config, path, data) found by the CLI's checks: one line, exit status 2."""


class RunStopped(Exception):
    """A run that ended early with its state kept: the CLI prints the message and exits with ``status``."""

    status = 1


class Diverged(RunStopped):
    """The loss became non-finite; the last good checkpoint is kept (exit status 3: not a usage error)."""

    status = 3


class MachineFault(RunStopped):
    """The machine, not the input: a full disk, a read-only or vanished run dir (exit status 4). The last good
    checkpoint is kept and no partial file is left behind."""

    status = 4


FAULT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.ENOENT})


def machine_fault(err: OSError, where: str = "") -> MachineFault | None:
    """The MachineFault an OSError of the disk becomes (None for other OSErrors), naming the path and the remedy."""
    if err.errno not in FAULT_ERRNOS:
        return None
    path = err.filename or where or "the run dir"
    remedy = {
        errno.ENOSPC: "free space on its disk",
        errno.EDQUOT: "free space within your quota",
        errno.EROFS: "give the run a writable hydra.run.dir",
        errno.EACCES: "give the run a writable hydra.run.dir",
        errno.EPERM: "give the run a writable hydra.run.dir",
        errno.ENOENT: "it vanished while the run used it; give it back, or the run another hydra.run.dir",
        errno.EIO: "check the disk",
    }[err.errno]
    return MachineFault(f"{path}: {err.strerror or err}; {remedy}, then run the same command again")


class Interrupted(RunStopped):
    """SIGTERM (e.g. cluster preemption) or Ctrl-C: a checkpoint was written; exit status 128 + the signal number."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.status = 128 + signal_number


class Preempted(Interrupted):
    """The scheduler's preemption signal (SLURM's ``--signal``, submitit's USR2): a checkpoint was written; the job
    is requeued (``sslrun.cluster.Preemption.requeue``) and continues its run dir through ``resume=auto``."""

    def __init__(self, message: str, signal_number: int, preemption: object) -> None:
        super().__init__(message, signal_number)
        self.preemption = preemption
