"""The exceptions the CLI turns into one line and an exit status, without a traceback.

Library code (backbones, data, losses, methods) raises ``ValueError`` or ``TypeError`` with its own message; the CLI
(``sslrun.app``) prints any of them in one line and exits with status 2. ``UserError`` is the CLI's own: a config that
fails its schema or its pre-flight checks.
"""

FAILED = "failed.json"  # in the run dir of a job that failed within a sweep: its exit status and its one line


class UserError(ValueError):
    """A mistake in the user's input (config, path, data) found by the CLI's checks: one line, exit status 2."""


class RunStopped(Exception):
    """A run that ended early with its state kept: the CLI prints the message and exits with ``status``."""

    status = 1


class Diverged(RunStopped):
    """The loss became non-finite; the last good checkpoint is kept (exit status 3: not a usage error)."""

    status = 3


class Interrupted(RunStopped):
    """SIGTERM (e.g. cluster preemption) or Ctrl-C: a checkpoint was written; exit status 128 + the signal number."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.status = 128 + signal_number
