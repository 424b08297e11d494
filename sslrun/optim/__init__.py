"""Optimizers by name, parameter groups (no weight decay on biases and norms), and the warmup-cosine schedule."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from sslrun.config import AdamConfig, LARSConfig, OptimConfig, SGDConfig
from sslrun.optim.lars import LARS
from sslrun.registry import Registry

OPTIMIZERS = Registry("optimizer")
AUTO_WARMUP_EPOCHS = 10
AUTO_WARMUP_FRACTION = 0.1
LR_SCALINGS = {"linear": lambda ratio: ratio, "sqrt": math.sqrt, "none": lambda ratio: 1.0}
log = logging.getLogger(__name__)


def optimizer(name: str, config: type[OptimConfig]):
    """Register an optimizer builder under ``name`` with ``config``, the schema of its keys (``optim.*``)."""

    def register(build):
        build.Config = config
        return OPTIMIZERS.register(name)(build)

    return register


@optimizer("sgd", SGDConfig)
def build_sgd(groups: list[dict], cfg: SGDConfig, lr: float) -> torch.optim.Optimizer:
    """SGD with momentum"""
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@optimizer("adam", AdamConfig)
def build_adam(groups: list[dict], cfg: AdamConfig, lr: float) -> torch.optim.Optimizer:
    """Adam (L2 weight decay coupled to the gradient; DCGAN's settings in its YAML)"""
    return torch.optim.Adam(groups, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


@optimizer("adamw", AdamConfig)
def build_adamw(groups: list[dict], cfg: AdamConfig, lr: float) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay)"""
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


@optimizer("lars", LARSConfig)
def build_lars(groups: list[dict], cfg: LARSConfig, lr: float) -> torch.optim.Optimizer:
    """LARS (You et al. 2017): SGD with a layer-wise trust ratio, as SimCLR uses"""
    return LARS(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, eta=cfg.trust_coefficient)


def optim_schema(cfg: Any) -> OptimConfig:
    """The schema of the composed config's optimizer (``optim.name``), for ``sslrun.config.validate``."""
    return OPTIMIZERS.get(str(OmegaConf.select(cfg, "optim.name"))).Config()


def param_groups(params: nn.Module | Iterable[nn.Parameter], cfg: OptimConfig) -> list[dict]:
    """Two groups of a module's (or an iterable's) trainable parameters: weights (decayed, LARS-adapted) and
    biases/norm parameters (neither, when excluded)."""
    decay, plain = [], []
    for p in params.parameters() if isinstance(params, nn.Module) else params:
        if p.requires_grad:
            (plain if cfg.exclude_bias_and_norm and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay}]
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0, "lars_exclude": True})
    return groups


def lr_scaling(cfg: OptimConfig) -> str:
    """``optim.scale_lr``: linear (or true), sqrt, or none (or false)."""
    value = cfg.scale_lr
    if isinstance(value, bool):
        return "linear" if value else "none"
    return value


def effective_lr(cfg: OptimConfig, global_batch_size: int) -> float:
    """``optim.lr`` is the lr at a global batch of 256. ``linear`` (Goyal et al. 2017): lr x batch / 256; ``sqrt``
    (SimCLR, Chen et al. 2020, appendix B.1, better for small batches and short runs): lr x sqrt(batch / 256)."""
    return cfg.lr * LR_SCALINGS[lr_scaling(cfg)](global_batch_size / 256)


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float = 0.0):
    """Multiplier for LambdaLR: linear warmup from ~0 to 1, then cosine decay to ``min_ratio``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def warmup_steps(warmup_epochs: object, steps_per_epoch: int, total_steps: int) -> int:
    """Warmup in optimizer steps. ``auto``: 10 epochs or 10% of the run, whichever is shorter, so a short run
    (or one cut by ``trainer.max_steps``) reaches its peak lr; a number of epochs is capped to leave a decay."""
    if warmup_epochs == "auto":
        return min(AUTO_WARMUP_EPOCHS * steps_per_epoch, int(AUTO_WARMUP_FRACTION * total_steps))
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int | float) or warmup_epochs < 0:
        raise ValueError(f"optim.warmup_epochs={warmup_epochs!r} must be a non-negative number of epochs or auto")
    steps = int(warmup_epochs * steps_per_epoch)
    if steps >= total_steps:
        log.warning(
            "optim.warmup_epochs=%s (%d steps) is as long as the run (%d steps): the lr never reaches its peak; "
            "optim.warmup_epochs=auto fits the warmup to the run",
            warmup_epochs,
            steps,
            total_steps,
        )
    return min(steps, max(0, total_steps - 1))


def build_optimizer(
    groups: Iterable[dict], cfg: OptimConfig, global_batch_size: int, steps_per_epoch: int, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    lr = effective_lr(cfg, global_batch_size)
    optimizer = OPTIMIZERS.build(cfg.name, list(groups), cfg, lr)
    warmup = warmup_steps(cfg.warmup_epochs, steps_per_epoch, total_steps)
    log.info(
        "schedule: %s, peak lr %.4g (optim.lr=%g at batch 256, %s-scaled to global batch %d), %d warmup steps "
        "(%.2f epochs, optim.warmup_epochs=%s) then cosine to %g x peak, %d steps in all (%d per epoch)",
        cfg.name,
        lr,
        cfg.lr,
        lr_scaling(cfg),
        global_batch_size,
        warmup,
        warmup / max(1, steps_per_epoch),
        cfg.warmup_epochs,
        cfg.min_lr_ratio,
        total_steps,
        steps_per_epoch,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, total_steps, cfg.min_lr_ratio))
    return optimizer, schedule


def run_steps(trainer: Any, steps_per_batch: int = 1) -> int:
    """Steps of each optimizer in the whole run: Lightning's estimate (``max_steps``, epochs and accumulation), except
    that under manual optimisation with ``steps_per_batch`` optimizers Lightning counts every optimizer's step in
    ``global_step``, so ``max_steps`` ends the run after max_steps / steps_per_batch batches."""
    total = int(trainer.estimated_stepping_batches)  # also sets up the train loader, so the batch count is known
    if steps_per_batch > 1 and trainer.max_steps > 0:
        batches = trainer.num_training_batches
        by_epochs = total
        if trainer.max_epochs and trainer.max_epochs > 0 and batches != float("inf"):
            by_epochs = int(batches) * trainer.max_epochs
        total = min(math.ceil(trainer.max_steps / steps_per_batch), by_epochs)
    return total


def lightning_optimizers(
    trainer: Any, groups: Iterable[dict], cfg: OptimConfig, batch_size: int, steps_per_batch: int = 1
) -> dict:
    """``configure_optimizers`` output for a Lightning ``trainer``: the optimizer and a per-step warmup-cosine
    schedule over the whole run, with warmup counted in epochs and the lr scaled by the global batch.

    ``steps_per_batch``: optimizers stepped per batch under manual optimisation (two-player methods), each counted
    in ``trainer.global_step`` by Lightning, so ``trainer.max_steps`` ends the run after max_steps / steps_per_batch
    batches; the schedule (stepped once per batch) is fitted to that."""
    total = run_steps(trainer, steps_per_batch)
    batches = trainer.num_training_batches
    per_epoch = 1 if batches == float("inf") else max(1, int(batches) // trainer.accumulate_grad_batches)
    accumulate = trainer.accumulate_grad_batches
    devices = trainer.world_size // max(1, trainer.num_nodes)
    global_batch = batch_size * trainer.world_size * accumulate
    log.info(
        "global batch %d = %d per device (data.batch_size) x %d device(s) x %d node(s) x %d accumulated "
        "(trainer.accumulate_grad_batches)",
        global_batch,
        batch_size,
        devices,
        trainer.num_nodes,
        accumulate,
    )
    optimizer, schedule = build_optimizer(groups, cfg, global_batch, per_epoch, total)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
