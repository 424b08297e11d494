"""Running the real ``sslrun`` console script in tests: tiny settings, and the user-error contract."""

import os
import subprocess
import sys
from pathlib import Path

SSLRUN = str(Path(sys.executable).with_name("sslrun"))
TINY = [
    "data.limit=64",
    "data.batch_size=16",
    "data.num_workers=0",
    "backbone=convnet",
    "backbone.width=0.25",
    "trainer=debug",
]


def sslrun(*args: str, cwd: Path, threads: int | None = None) -> subprocess.CompletedProcess:
    """``threads``: OMP_NUM_THREADS for the run (tiny runs on a busy machine are faster on one)."""
    env = os.environ if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.run([SSLRUN, *args], capture_output=True, text=True, timeout=600, cwd=cwd, env=env)


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 2, no traceback, and every fragment in the (whitespace-normalised) error output."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    message = " ".join(proc.stderr.split())
    for fragment in fragments:
        assert fragment in message, message
