"""One process per run dir: ``run_lock(dir)`` holds ``dir/.sslrun.lock`` (PID, host, start time, job id) while a
command trains there, so a second copy of the same command stops at once instead of interleaving its checkpoints
and logs with the first one's.

A lock whose holder is gone is taken over, with a line saying so: a process of this host that no longer exists, or
an earlier attempt of the same cluster job (``SLURM_JOB_ID``: a requeued job). DDP ranks other than the first and
nodes other than the first do not lock (they are the holder's own processes).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sslrun.cluster import is_first_process
from sslrun.errors import UserError

LOCK = ".sslrun.lock"
log = logging.getLogger(__name__)


def holder_record() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime()),
        "job": os.environ.get("SLURM_JOB_ID"),
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def stale_reason(holder: dict) -> str | None:
    """Why the recorded holder no longer holds the run dir (None: it may still be running)."""
    me = holder_record()
    if holder.get("job") and holder.get("job") == me["job"]:
        return f"an earlier attempt of job {holder['job']}"
    if holder.get("host") == me["host"] and not _alive(int(holder.get("pid", -1))):
        return f"process {holder.get('pid')} no longer exists"
    return None


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # half written or removed meanwhile: treated as held by an unknown process


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block; UserError naming the holder when another live process has it."""
    if not is_first_process():
        yield
        return
    path = run_dir / LOCK
    record = holder_record()
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(path)
            reason = stale_reason(holder) if holder else None
            if reason is None:
                who = f"PID {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('started', '?')}"
                raise UserError(
                    f"run dir {run_dir} is in use by {who} ({path}); wait for it to end, or give this run another "
                    "hydra.run.dir"
                ) from None
            log.warning("taking over the lock of %s: %s", run_dir, reason)
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        break
    else:
        raise UserError(f"could not lock run dir {run_dir} ({path}): another process keeps taking it")
    try:
        yield
    finally:
        if _read(path).get("pid") == record["pid"]:
            path.unlink(missing_ok=True)
