"""Provenance of a measured row, and appending rows to a ``results/*.jsonl`` file (docs/results.md is generated
from those files by ``scripts/results_page.py``).

    from provenance import append_row, provenance

    append_row("results/methods_fashion.jsonl", {"method": "byol", "linear_top1": 0.75, **provenance(command)})

A results file starts with one header line (``{"table": {...}}``: title, protocol, columns) written by hand; every
other line is one measured row. Rows are only ever appended: a later row with the same key supersedes an earlier one
on the generated page, and the file keeps both.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def this_command() -> str:
    """The command line that started this script, as it can be pasted into a shell."""
    return shlex.join(["python", *sys.argv])


def git_commit() -> str | None:
    """``git rev-parse HEAD`` of this repository, or None outside a git checkout."""
    try:
        done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def machine() -> str:
    """CPU count and architecture, and the CUDA device when there is one, e.g. '2-core CPU (x86_64, Linux)'."""
    cpu = f"{os.cpu_count()}-core CPU ({platform.machine()}, {platform.system()})"
    try:
        import torch
    except ImportError:
        return cpu
    if not torch.cuda.is_available():
        return cpu
    gpus = torch.cuda.device_count()
    return f"{cpu}, {gpus} x {torch.cuda.get_device_name(0)}"


def provenance(command: str) -> dict:
    """The provenance keys of a measured row: ``command``, ``commit``, ``date`` (UTC) and ``machine``."""
    date = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"command": command, "commit": git_commit(), "date": date, "machine": machine(), "source": "measured"}


def append_row(path: str | Path, row: dict) -> None:
    """Append ``row`` as one JSON line to ``path`` (created with its folder if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
