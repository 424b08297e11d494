"""Where a run writes: the Hydra run dir, and its ``metrics.json``."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sslrun import console
from sslrun.cluster import is_first_process

log = logging.getLogger(__name__)


def run_dir() -> Path:
    """The current Hydra run (or multirun job) directory; the working directory outside Hydra."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


def record_config(cfg: DictConfig, command: str, continuing: bool = False) -> None:
    """Print the resolved config tree and store it as ``config.yaml`` in the run dir (``.hydra/config.yaml`` keeps
    the composed one, ``auto`` values unresolved); once, on the first process of a DDP run. A run that continues (a
    resume, or a finished run met again) keeps the ``config.yaml`` it trained with: a re-run whose config differs
    (in keys allowed to) is written beside it as ``config.rerun-<time>.yaml``, and the log says so."""
    if not is_first_process():
        return
    console.print_config(cfg, f"sslrun {command}")
    text = OmegaConf.to_yaml(cfg, resolve=True)
    path = run_dir() / "config.yaml"
    if continuing and path.is_file():
        if path.read_text() != text:
            rerun = path.with_name(f"config.rerun-{time.strftime('%Y%m%d-%H%M%S')}.yaml")
            rerun.write_text(text)
            log.warning(
                "kept %s (what the run trained with); this re-run's config, which differs, is in %s", path, rerun
            )
        return
    path.write_text(text)


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(file)`` into a temporary file beside ``path`` (one per process), flushed to disk, then renamed onto
    ``path``: the file is whole or untouched, and the temporary one never outlives a failure (a full disk is not
    filled further by a dead half)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(partial, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def run_holding(path: Path) -> Path | None:
    """The run dir whose ``checkpoints/`` holds ``path`` (existing or not), if any: a ``checkpoints`` folder beside a
    run's ``config.yaml`` or ``.hydra/``."""
    for parent in (path, *path.parents):
        if parent.name == "checkpoints" and (
            (parent.parent / "config.yaml").is_file() or (parent.parent / ".hydra").is_dir()
        ):
            return parent.parent
    return None


def check_writable_output(path: Path, key: str, overwrite: bool) -> None:
    """ValueError for an output file that would destroy something: a path inside a run's ``checkpoints/`` (never),
    a directory, or an existing file without ``overwrite``."""
    run = run_holding(path.resolve())
    if run is not None:
        raise ValueError(
            f"{key}={path} is inside the checkpoints of run {run}; write it elsewhere (e.g. {run}/encoder.pt)"
        )
    if path.is_dir():
        raise ValueError(f"{key}={path} is a directory; name a file in it, e.g. {key}={path / 'encoder.pt'}")
    if path.exists() and not overwrite:
        raise ValueError(f"{key}={path} exists; pass overwrite=true to replace it, or another {key}=")
    if not path.parent.is_dir():
        raise ValueError(f"{key}={path}: the folder {path.parent} does not exist")


def read_metrics(out_dir: Path) -> dict:
    """The run's ``metrics.json`` ({} when it has none)."""
    path = out_dir / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def write_metrics(out_dir: Path, metrics: Mapping[str, float | int | str]) -> Path:
    path = out_dir / "metrics.json"
    path.write_text(json.dumps(dict(metrics), indent=2, sort_keys=True) + "\n")
    return path
