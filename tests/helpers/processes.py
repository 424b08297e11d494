"""Helpers for tests that start processes of their own: a free TCP port for a DDP rendezvous on this host, and the
scripts/ modules imported for the length of a test."""

import importlib
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

SCRIPTS = Path(__file__).parents[2] / "scripts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def script_module(monkeypatch, name: str):
    """``scripts/<name>.py`` imported (scripts/ on the path), and forgotten afterwards."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    try:
        yield importlib.import_module(name)
    finally:
        sys.modules.pop(name, None)
