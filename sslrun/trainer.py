"""Builds the Lightning Trainer from ``trainer`` and ``logger`` configs: precision, devices, loggers, checkpoints."""

from __future__ import annotations

import csv
import logging
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from sslrun import trackers
from sslrun.callbacks.checkpoints import AtomicCheckpointIO, LastCheckpoint
from sslrun.callbacks.guard import DivergenceGuard
from sslrun.callbacks.progress import RunProgressBar
from sslrun.resume import last_checkpoint

log = logging.getLogger(__name__)


class _QuietLightning(logging.Filter):
    """Drops Lightning's advertisement line from the run log and the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("\N{ELECTRIC LIGHT BULB} Tip")


logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_QuietLightning())


class _LogFileOnly(logging.Filter):
    """Lightning's start-up and stop notes (accelerators found, AMP, batches, "fit stopped") below WARNING: kept in
    the run's log file, not shown in the terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith(("pytorch_lightning", "lightning"))


def route_lightning_notes_to_the_log_file() -> None:
    """Lightning gives its logger a terminal handler of its own when it is imported before logging is configured;
    under Hydra the run's handlers (terminal and log file) exist by now: Lightning's records go through them, and
    the terminal's drops the notes."""
    lightning = logging.getLogger("pytorch_lightning")
    root = logging.getLogger()
    if not root.handlers:
        return  # outside a configured run (tests, scripts): Lightning's own handler stays
    for handler in list(lightning.handlers):
        if type(handler) is logging.StreamHandler:
            lightning.removeHandler(handler)
    lightning.propagate = True
    for handler in root.handlers:
        if type(handler) is logging.StreamHandler and not any(isinstance(f, _LogFileOnly) for f in handler.filters):
            handler.addFilter(_LogFileOnly())


# Noise about Lightning's own internals, or about epochs shorter than the logging interval on small datasets.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging interval")
# A mid-epoch resume restarts the epoch's data order; the run log says so in its own words (sslrun.resume).
warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts; a run that continues its run dir
    appends to it instead, under the header it has."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])


class ContinuingCSVLogger(CSVLogger):
    """``csv/metrics.csv`` of a resumed or requeued run holds the rows of every launch."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def build_loggers(cfg: DictConfig, out_dir: Path, continuing: bool = False) -> list[Logger]:
    loggers: list[Logger] = []
    if cfg.csv is not None:
        csv_logger = ContinuingCSVLogger if continuing else CSVLogger
        loggers.append(
            csv_logger(out_dir, name="csv", version="", flush_logs_every_n_steps=cfg.csv.flush_logs_every_n_steps)
        )
    if cfg.tensorboard is not None:
        loggers.append(
            TensorBoardLogger(
                out_dir, name="tensorboard", version="", default_hp_metric=cfg.tensorboard.default_hp_metric
            )
        )
    return loggers + trackers.build(cfg, out_dir, continuing)


def transformer_blocks() -> set[type]:
    """The block classes FSDP wraps (and checkpoints): sslrun's ViT blocks, and timm's where timm is there."""
    blocks: set[type] = {torch.nn.TransformerEncoderLayer}
    try:
        from timm.models.vision_transformer import Block

        blocks.add(Block)
    except ImportError:
        pass
    return blocks


def fsdp_strategy(activation_checkpointing: bool) -> Any:
    """Lightning's FSDP, each transformer block its own shard unit; full (unsharded) checkpoints, so a run's
    ``last.ckpt`` stays what ``finetune``, ``export`` and ``resume`` read."""
    from pytorch_lightning.strategies import FSDPStrategy

    blocks = transformer_blocks()
    return FSDPStrategy(
        auto_wrap_policy=blocks,
        activation_checkpointing_policy=blocks if activation_checkpointing else None,
        state_dict_type="full",
    )


def strategy_for(strategy: str, devices: object, num_nodes: int, find_unused_parameters: bool) -> str:
    """``trainer.strategy``, turned into DDP that looks for unused parameters where the model needs it (two-player
    methods, whose backward passes reach one player each) and DDP would run."""
    distributed = strategy == "ddp" or (strategy == "auto" and (devices not in (1, "1") or num_nodes > 1))
    return "ddp_find_unused_parameters_true" if find_unused_parameters and distributed else strategy


def build_trainer(
    cfg: DictConfig,
    logger_cfg: DictConfig,
    out_dir: Path,
    callbacks: list[Callback],
    command: str,
    run_config: dict[str, Any],
    validate: bool = False,
    manual_optimization: bool = False,
    continuing: bool = False,
) -> pl.Trainer:
    """A Trainer writing ``checkpoints/last.ckpt`` (atomically; with ``run_config``, the resolved config of
    ``sslrun <command>``, for ``resume``) and logger output into ``out_dir``, stopping on a non-finite loss; the
    Lightning validation loop runs only with ``validate`` (pretraining evaluates through the kNN monitor instead).
    With ``manual_optimization`` (two-player methods) the model clips its own gradients and DDP looks for unused
    parameters. ``continuing``: the run resumes its checkpoint, and its W&B/MLflow runs with it."""
    route_lightning_notes_to_the_log_file()
    path = last_checkpoint(out_dir)
    checkpoint = LastCheckpoint(path, command, run_config, cfg.checkpoint_every_n_steps, cfg.checkpoint_every_n_minutes)
    extra: list[Callback] = [DivergenceGuard(path), checkpoint]
    if cfg.enable_progress_bar:
        extra.append(RunProgressBar(leave=True))
    loggers = build_loggers(logger_cfg, out_dir, continuing)
    trackers.log_config(loggers, run_config)
    return pl.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=fsdp_strategy(cfg.activation_checkpointing)
        if cfg.strategy == "fsdp"
        else strategy_for(cfg.strategy, cfg.devices, cfg.num_nodes, manual_optimization),
        num_nodes=cfg.num_nodes,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        precision=cfg.precision,
        max_epochs=cfg.max_epochs,
        max_steps=cfg.max_steps,
        limit_train_batches=cfg.limit_train_batches,
        limit_val_batches=1.0 if validate else 0,
        num_sanity_val_steps=0,
        log_every_n_steps=cfg.log_every_n_steps,
        gradient_clip_val=None if manual_optimization else cfg.gradient_clip_val,
        sync_batchnorm=cfg.sync_batchnorm,
        deterministic=cfg.deterministic,
        enable_progress_bar=cfg.enable_progress_bar,
        enable_model_summary=False,  # a whole table in the terminal at every start
        default_root_dir=out_dir,
        logger=loggers or False,
        callbacks=[*callbacks, *extra],
        enable_checkpointing=False,
        plugins=[AtomicCheckpointIO(), *cluster_plugins()],
    )


def cluster_plugins() -> list:
    """Under SLURM, Lightning's SLURM environment without its own requeue handler: sslrun's checkpoint callback
    takes the preemption signal (at a batch end, every rank alike) and requeues (``sslrun.cluster``)."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def compile_for_training(model: torch.nn.Module) -> list[str]:
    """``trainer.compile=true``: ``torch.compile`` the backbone and any EMA teacher of it in place (``Module.compile``:
    the state-dict keys, hence checkpoints and exports, stay those of the eager modules). UserError in one line where
    this platform cannot compile. Returns the compiled modules' names."""
    from sslrun.errors import UserError

    try:
        probe = torch.compile(lambda x: torch.nn.functional.relu(x) * 2.0)
        probe(torch.randn(8))
    except Exception as err:  # noqa: BLE001 - whatever stops the compiler: no C++ compiler, an unsupported Python
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise UserError(
            f"trainer.compile=true, but torch.compile does not work here ({reason}); set trainer.compile=false"
        ) from None
    names = [name for name, _ in model.named_children() if name == "backbone" or name.startswith("teacher_backbone")]
    for name in names:
        getattr(model, name).compile()
    log.info(
        "trainer.compile: torch.compile of %s; the first steps (and the first evaluation) compile", ", ".join(names)
    )
    return names
