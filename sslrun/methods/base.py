"""Plumbing shared by every SSL method: backbone, online probe, channels_last, optimizer and schedule, gathering.

A method subclasses ``SSLMethod``, sets ``Config`` to its schema and implements ``ssl_step``.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from sslrun.backbones import BACKBONES
from sslrun.callbacks.online_probe import OnlineLinearProbe
from sslrun.config import MethodConfig
from sslrun.optim import lightning_optimizers, param_groups


class SSLMethod(pl.LightningModule):
    Config: type[MethodConfig] = MethodConfig

    def __init__(self, cfg: dict[str, Any], in_channels: int, image_size: int, num_classes: int) -> None:
        """``cfg`` is the whole resolved pretrain config as plain containers (stored in the checkpoint)."""
        super().__init__()
        self.save_hyperparameters()
        self.cfg: DictConfig = OmegaConf.create(cfg)
        self.backbone = BACKBONES.build(self.cfg.backbone.name, self.cfg.backbone, in_channels, image_size)
        # No labels (an unlabelled image folder): no probe; the kNN monitor reports label-free signals instead.
        self.probe = OnlineLinearProbe(self.backbone.feature_dim, num_classes) if num_classes > 0 else None
        self.channels_last = bool(self.cfg.trainer.channels_last)

    def ssl_step(self, view1: torch.Tensor, view2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Views (B, C, H, W) -> (SSL loss, backbone features of ``view1`` (B, D) for the online probe)."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (view1, view2), labels = batch
        if self.channels_last:
            view1 = view1.contiguous(memory_format=torch.channels_last)
            view2 = view2.contiguous(memory_format=torch.channels_last)
        loss, feats = self.ssl_step(view1, view2)
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        if self.probe is None:
            return loss
        probe_loss, probe_acc = self.probe.loss(feats, labels)
        self.log("probe_train_acc", probe_acc, on_step=False, on_epoch=True, sync_dist=True)
        return loss + probe_loss

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """(n, ...) per rank -> (world_size * n, ...) in rank order, gradients flowing back to every rank."""
        if self._trainer is None or self.trainer.world_size == 1:
            return x
        return self.all_gather(x, sync_grads=True).flatten(0, 1)

    def configure_optimizers(self):
        ssl_params = torch.nn.ModuleList(m for name, m in self.named_children() if name != "probe")
        groups = param_groups(ssl_params, self.cfg.optim)
        if self.probe is not None:
            groups.append(
                {
                    "params": list(self.probe.parameters()),
                    "lr": self.cfg.eval.probe_lr,
                    "weight_decay": 0.0,
                    "lars_exclude": True,
                }
            )
        return lightning_optimizers(self.trainer, groups, self.cfg.optim, self.cfg.data.batch_size)
