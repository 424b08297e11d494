"""W&B and MLflow as Lightning loggers, beside CSV and TensorBoard: offline where there is no server or key, and one
tracker run per run dir. The tracker run ids are kept in ``<run dir>/trackers.json``, so a resumed or requeued run
continues its W&B and MLflow runs instead of starting new ones; the resolved config and sslrun's version and git
commit go into each tracker's config."""

from __future__ import annotations

import json
import logging
import netrc
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

from sslrun.cluster import is_first_process

log = logging.getLogger(__name__)
IDS = "trackers.json"
EXTRA = 'pip install "sslrun[trackers]"'


def source_version() -> dict[str, str | None]:
    """sslrun's version and, when it runs from a git checkout, the commit (``+dirty`` with uncommitted changes)."""
    import sslrun

    here = Path(sslrun.__file__).parent
    commit = None
    try:
        done = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if done.returncode == 0:
            commit = done.stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            if dirty.stdout.strip():
                commit += "+dirty"
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"version": sslrun.__version__, "commit": commit}


def has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return (
            netrc.netrc().authenticators(os.environ.get("WANDB_BASE_URL", "api.wandb.ai").split("//")[-1]) is not None
        )
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(mode: str) -> str:
    return ("online" if has_wandb_key() else "offline") if mode == "auto" else mode


def check(logger_cfg: Any) -> None:
    """A tracker's missing package, or W&B online without a key: one line, before anything runs."""
    from sslrun.errors import UserError

    if logger_cfg.wandb is not None:
        _require("wandb")
        if logger_cfg.wandb.mode == "online" and not has_wandb_key():
            raise UserError(
                "logger.wandb.mode=online needs a W&B key: set WANDB_API_KEY or run `wandb login`, or use "
                "logger.wandb.mode=offline (and `wandb sync` later)"
            )
    if logger_cfg.mlflow is not None:
        _require("mlflow")


def _require(module: str) -> None:
    import importlib.util

    from sslrun.errors import UserError

    if importlib.util.find_spec(module) is None:
        raise UserError(f"logger={module} needs the {module} package: {EXTRA}")


def _read_ids(out_dir: Path) -> dict:
    try:
        return json.loads((out_dir / IDS).read_text())
    except (OSError, ValueError):
        return {}


def _write_ids(out_dir: Path, ids: dict) -> None:
    if is_first_process():
        (out_dir / IDS).write_text(json.dumps(ids, indent=2) + "\n")


def build(logger_cfg: Any, out_dir: Path, continuing: bool) -> list:
    """The W&B and MLflow loggers the config asks for. ``continuing``: this run continues the run dir's checkpoint,
    so it continues the tracker runs recorded there too."""
    loggers: list = []
    ids = _read_ids(out_dir) if continuing else {}
    if logger_cfg.wandb is not None:
        loggers.append(_wandb(logger_cfg.wandb, out_dir, ids))
    if logger_cfg.mlflow is not None:
        loggers.append(_mlflow(logger_cfg.mlflow, out_dir, ids))
    if loggers:
        _write_ids(out_dir, ids)
    return loggers


def _wandb(cfg: Any, out_dir: Path, ids: dict) -> Any:
    os.environ.setdefault("WANDB_SILENT", "true")
    from pytorch_lightning.loggers import WandbLogger

    resumed = "wandb" in ids
    ids.setdefault("wandb", uuid.uuid4().hex[:8])  # W&B run ids: 8 lowercase letters and digits
    mode = wandb_mode(cfg.mode)
    logger = WandbLogger(
        name=cfg.name or out_dir.name,
        save_dir=str(out_dir),
        project=cfg.project,
        entity=cfg.entity,
        id=ids["wandb"],
        offline=mode == "offline",
        tags=list(cfg.tags) or None,
        resume="allow",
    )
    if is_first_process():
        where = f"offline under {out_dir / 'wandb'} (upload: wandb sync {out_dir / 'wandb'}/offline-run-*)"
        log.info(
            "W&B run %s, %s%s", ids["wandb"], "continued, " if resumed else "", where if mode == "offline" else "online"
        )
    return logger


def _mlflow(cfg: Any, out_dir: Path, ids: dict) -> Any:
    from lightning_fabric.utilities.logger import _convert_params, _flatten_dict
    from pytorch_lightning.loggers import MLFlowLogger

    class ContinuedMLFlowLogger(MLFlowLogger):
        """MLflow refuses to change a logged param: a continued run logs only the params its run does not have yet
        (a resume may change a few keys: the run dir's config.rerun-*.yaml records them)."""

        def log_hyperparams(self, params: Any) -> None:
            params = _flatten_dict(_convert_params(params))
            if resumed:
                logged = self.experiment.get_run(self.run_id).data.params
                params = {k: v for k, v in params.items() if k not in logged}
            if params:
                super().log_hyperparams(params)

    uri = cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"file:{out_dir / 'mlruns'}"
    if uri.startswith("file:"):
        # MLflow 3 keeps its file store in maintenance mode and refuses it unless told: it is the store that needs no
        # server, and `mlflow ui --backend-store-uri` reads it
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    resumed = "mlflow" in ids
    logger = ContinuedMLFlowLogger(
        experiment_name=cfg.experiment,
        run_name=cfg.run_name or out_dir.name,
        tracking_uri=uri,
        run_id=ids.get("mlflow"),
    )
    if is_first_process():
        ids["mlflow"] = logger.run_id  # creates the run on the first process
        log.info("MLflow run %s%s in %s", ids["mlflow"], ", continued" if resumed else "", uri)
    return logger


def log_config(loggers: list, config: dict) -> None:
    """The resolved config and sslrun's version and commit, into every logger (W&B's config, MLflow's params,
    TensorBoard's and CSV's hparams)."""
    if not loggers or not is_first_process():  # the other ranks' loggers write nothing: no git calls there
        return
    params = {"config": config, "sslrun": source_version()}
    for logger in loggers:
        logger.log_hyperparams(params)
