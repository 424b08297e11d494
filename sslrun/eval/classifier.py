"""Supervised evaluation head: a linear classifier on an encoder (frozen features or full fine-tuning)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from sslrun.optim import lightning_optimizers, param_groups


class Classifier(pl.LightningModule):
    """``head(encoder(x))`` trained with cross-entropy; logs ``top1`` and ``top5`` on the validation split.

    For the linear protocol the encoder is ``nn.Identity`` over precomputed features (B, D); for full
    fine-tuning it is the backbone over images (B, C, H, W).
    """

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        num_classes: int,
        optim: DictConfig,
        batch_size: int,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(feature_dim, num_classes)
        self.optim = optim
        self.batch_size = batch_size
        self.channels_last = channels_last
        self.top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.encoder(x))

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x).float()
        self.top1.update(logits, y)
        self.top5.update(logits, y)
        self.log("top1", self.top1, prog_bar=True, on_epoch=True)
        self.log("top5", self.top5, on_epoch=True)

    def configure_optimizers(self):
        return lightning_optimizers(self.trainer, param_groups(self, self.optim), self.optim, self.batch_size)
