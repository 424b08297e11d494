"""Where a run writes: the Hydra run dir, and its ``metrics.json``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from hydra.core.hydra_config import HydraConfig


def run_dir() -> Path:
    """The current Hydra run (or multirun job) directory; the working directory outside Hydra."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


def write_metrics(out_dir: Path, metrics: Mapping[str, float | int | str]) -> Path:
    path = out_dir / "metrics.json"
    path.write_text(json.dumps(dict(metrics), indent=2, sort_keys=True) + "\n")
    return path
