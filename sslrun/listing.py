"""``sslrun list``: every registered method, backbone, dataset, optimizer and loss backend, one line each.

The rows come from the registries, which import torch; they are kept in a cache file keyed by the installed sslrun
sources (path, size, modification time), so every ``sslrun list`` after the first answers without importing torch."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path

from sslrun import console
from sslrun import method_needs as needs

PACKAGE = Path(__file__).resolve().parent


def _describe(obj: object) -> str:
    return (inspect.getdoc(obj) or "").splitlines()[0] if inspect.getdoc(obj) else ""


def rows() -> list[list[str]]:
    """[kind, name, description] of every registry entry, from the registries themselves."""
    from sslrun.backbones import BACKBONES
    from sslrun.data import DATASETS
    from sslrun.losses import NT_XENT_BACKENDS
    from sslrun.methods import METHODS
    from sslrun.optim import OPTIMIZERS

    registries = {"method": METHODS, "backbone": BACKBONES, "data": DATASETS, "optim": OPTIMIZERS}
    found = [[kind, name, _describe(reg.get(name))] for kind, reg in registries.items() for name in reg.names()]
    for row in found:  # what each method was measured to need (scripts/learning_curves.py)
        if row[0] == "method" and (need := needs.describe(row[1])):
            row[2] = f"{row[2]}; {need}" if row[2] else need
    return found + [["loss backend", name, "method.loss_backend=" + name] for name in NT_XENT_BACKENDS]


def cache_path() -> Path:
    """The cache file for the sources installed now: another version, or an edited file, is another file."""
    stamp = hashlib.sha1()
    for path in sorted([*PACKAGE.rglob("*.py"), needs.NEEDS] if needs.NEEDS.is_file() else PACKAGE.rglob("*.py")):
        info = path.stat()
        stamp.update(f"{path.relative_to(PACKAGE)}:{info.st_size}:{info.st_mtime_ns};".encode())
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "sslrun" / f"list-{stamp.hexdigest()[:16]}.json"


def cached_rows() -> list[list[str]]:
    path = cache_path()
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    found = rows()
    try:  # a cache that cannot be written costs only time
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(found))
        os.replace(partial, path)
    except OSError:
        pass
    return found


def main(argv: list[str]) -> None:
    console.print_rows("sslrun registry", [tuple(row) for row in cached_rows()])
