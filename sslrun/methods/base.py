"""Plumbing shared by every SSL method: backbone, online probe, channels_last, optimizer and schedule, gathering,
EMA teacher updates and step counts.

A method subclasses ``SSLMethod``, sets ``Config`` to its schema, declares the views it needs (``view_specs``) and
implements ``ssl_step`` over them; a method with EMA teachers lists its (student, teacher) pairs in
``momentum_pairs`` and has ``momentum_base`` / ``momentum_final`` in its config.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sslrun.backbones import BACKBONES
from sslrun.callbacks.online_probe import OnlineLinearProbe
from sslrun.config import MethodConfig
from sslrun.data.views import TWO_VIEWS, ViewSpec
from sslrun.errors import UserError
from sslrun.methods.momentum import cosine_momentum, ema_update
from sslrun.optim import lightning_optimizers, param_groups


class SSLMethod(pl.LightningModule):
    Config: type[MethodConfig] = MethodConfig
    backbones: tuple[str, ...] | None = None  # the backbones the method can train (None: any)
    optimizer_steps_per_batch = 1  # optimizers stepped per batch (two-player methods: 2)

    def __init__(self, cfg: dict[str, Any], in_channels: int, image_size: int, num_classes: int) -> None:
        """``cfg`` is the whole resolved pretrain config as plain containers (stored in the checkpoint)."""
        super().__init__()
        self.save_hyperparameters()
        self.cfg: DictConfig = OmegaConf.create(cfg)
        self.check_backbone(self.cfg.method.name, self.cfg.backbone.name)
        self.backbone = BACKBONES.build(self.cfg.backbone.name, self.cfg.backbone, in_channels, image_size)
        # No labels (an unlabelled image folder): no probe; the kNN monitor reports label-free signals instead.
        self.probe = OnlineLinearProbe(self.backbone.feature_dim, num_classes) if num_classes > 0 else None
        self.channels_last = bool(self.cfg.trainer.channels_last)
        self._momentum_step = -1

    @classmethod
    def check_backbone(cls, method: str, backbone: str) -> None:
        """UserError when the method cannot train ``backbone`` (``backbones``)."""
        if cls.backbones is not None and backbone not in cls.backbones:
            raise UserError(
                f"method={method} needs one of backbone={', '.join(cls.backbones)}, not backbone={backbone}"
            )

    @classmethod
    def view_specs(cls, method_cfg: DictConfig) -> Sequence[ViewSpec]:
        """The views this method trains on, in the order ``ssl_step`` receives them (default: two SimCLR views)."""
        return TWO_VIEWS

    def ssl_step(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One (B, C, s, s) batch per view spec -> (SSL loss, backbone features (B, D) of ``views[0]`` for the
        online probe, which detaches them)."""
        raise NotImplementedError

    def backbone_views(self, views: list[torch.Tensor], backbone: nn.Module | None = None) -> torch.Tensor:
        """Features (sum of B_v, D) of every view in order, one backbone pass per run of same-size views (multi-crop
        has two sizes); ``backbone`` defaults to the student's."""
        backbone = self.backbone if backbone is None else backbone
        out, start = [], 0
        while start < len(views):
            end = start + 1
            while end < len(views) and views[end].shape[1:] == views[start].shape[1:]:
                end += 1
            out.append(backbone(torch.cat(views[start:end])))
            start = end
        return torch.cat(out)

    def image_grids(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pictures of (B, C, H, W) normalised validation images, by name: rows of images (e.g. inputs over their
        reconstructions, or samples) stacked into (rows * B, C, H, W); none by default."""
        return {}

    def draw(self, n: int, sample: Callable[[int, torch.Generator], Any]) -> Any:
        """Per-sample randomness (noise, masks, permutations, latent codes) for this rank's ``n`` rows: ``sample(m,
        generator)`` draws m rows (a tensor or a tuple of tensors) for the whole global batch from a generator seeded
        by (seed, optimizer step), alike on every rank, and each rank keeps its block, so a run draws the same
        whatever its world size. Two calls in one step draw the same numbers: draw everything a step needs at once."""
        generator = torch.Generator(self.device).manual_seed(int(self.cfg.seed) * 1_000_003 + self.global_step)
        rows = sample(n * self.world_size, generator)
        block = slice(self.rank * n, (self.rank + 1) * n)
        return tuple(r[block] for r in rows) if isinstance(rows, tuple) else rows[block]

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(student, teacher) module pairs updated by EMA after every optimizer step; none by default."""
        return []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        views, labels = self.unpack(batch)
        loss, feats = self.ssl_step(views)
        return loss + self.probe_step(loss, feats, labels)

    def unpack(self, batch: Any) -> tuple[list[torch.Tensor], torch.Tensor]:
        views, labels = batch
        if self.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        return list(views), labels

    def probe_step(self, loss: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Logs the SSL ``loss``; the online probe's loss on the detached ``feats`` (0 without labels)."""
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        if self.probe is None:
            return loss.new_zeros(())
        probe_loss, probe_acc = self.probe.loss(feats, labels)
        self.log("probe_train_acc", probe_acc, on_step=False, on_epoch=True, sync_dist=True)
        return probe_loss

    @property
    def world_size(self) -> int:
        return 1 if self._trainer is None else self.trainer.world_size

    @property
    def rank(self) -> int:
        return 0 if self._trainer is None else self.trainer.global_rank

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """(n, ...) per rank -> (world_size * n, ...) in rank order, gradients flowing back to every rank (the
        backward sums the ranks' gradients, which DDP's gradient mean then divides back: a loss computed alike on
        every rank from gathered tensors gets exactly the single-process gradient)."""
        if self.world_size == 1:
            return x
        return self.all_gather(x, sync_grads=True).flatten(0, 1)

    def total_steps(self) -> int:
        """Optimizer steps in the whole run (``max_steps``, epochs and gradient accumulation counted)."""
        return 1 if self._trainer is None else max(1, int(self.trainer.estimated_stepping_batches))

    def epochs_to_steps(self, epochs: float) -> int:
        """``epochs`` of training in optimizer steps, at most 10% of the run (so a short run is not all warmup)."""
        if self._trainer is None:
            return 0
        batches = self.trainer.num_training_batches
        per_epoch = 1 if batches == float("inf") else max(1, int(batches) // self.trainer.accumulate_grad_batches)
        return min(math.ceil(epochs * per_epoch), int(0.1 * self.total_steps()))

    def on_train_start(self) -> None:
        self._momentum_step = self.trainer.global_step

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """EMA teachers follow their students after each optimizer step (not after an accumulation-only batch)."""
        pairs = self.momentum_pairs()
        step = self.trainer.global_step
        if not pairs or step == self._momentum_step:
            return
        self._momentum_step = step
        m = self.cfg.method
        momentum = cosine_momentum(step - 1, self.total_steps(), m.momentum_base, m.momentum_final)
        for student, teacher in pairs:
            ema_update(student, teacher, momentum)
        self.log("momentum", momentum, on_step=True, on_epoch=False)

    def probe_groups(self) -> list[dict]:
        """The online probe's parameter group (its own lr, no weight decay, no LARS); none without labels."""
        if self.probe is None:
            return []
        params = list(self.probe.parameters())
        return [{"params": params, "lr": self.cfg.eval.probe_lr, "weight_decay": 0.0, "lars_exclude": True}]

    def configure_optimizers(self):
        # Teachers have requires_grad=False, so param_groups leaves them out of the optimizer. Parameters held by the
        # method itself (MAE's mask token) count as well as those of its submodules.
        ssl_params = [p for name, p in self.named_parameters() if not name.startswith("probe.")]
        groups = param_groups(ssl_params, self.cfg.optim) + self.probe_groups()
        return lightning_optimizers(self.trainer, groups, self.cfg.optim, self.cfg.data.batch_size)
