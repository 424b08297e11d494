"""SimCLR (Chen et al. 2020, arXiv 2002.05709): two augmented views, a projection head, and the NT-Xent loss
over the global batch; under DDP every rank scores its own rows against the embeddings gathered from all ranks."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from sslrun.config import POSITIVE, MethodConfig, checked
from sslrun.losses import nt_xent, resolve_backend
from sslrun.methods import METHODS
from sslrun.methods.base import SSLMethod
from sslrun.methods.heads import projection_mlp

log = logging.getLogger(__name__)


@dataclass
class ContrastiveConfig(MethodConfig):
    temperature: float = checked(0.2, POSITIVE)
    loss_backend: str = "auto"
    gather: bool = True


@METHODS.register("contrastive")
class Contrastive(SSLMethod):
    """SimCLR: NT-Xent over 2N views (backends: auto, triton, chunked, naive)"""

    Config = ContrastiveConfig

    def __init__(self, cfg, in_channels: int, image_size: int, num_classes: int) -> None:
        super().__init__(cfg, in_channels, image_size, num_classes)
        m = self.cfg.method
        self.projector = projection_mlp(self.backbone.feature_dim, m.proj_hidden_dim, m.proj_output_dim)

    def on_fit_start(self) -> None:
        chosen = resolve_backend(self.cfg.method.loss_backend, self.device)
        log.info("contrastive loss backend: %s (requested %s)", chosen, self.cfg.method.loss_backend)

    def ssl_step(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        n = views[0].shape[0]
        feats = self.backbone_views(views)
        z1, z2 = self.projector(feats).float().split(n)
        m = self.cfg.method
        if m.gather and self.world_size > 1:
            z1, z2 = self.gather(z1), self.gather(z2)
            loss = nt_xent(z1, z2, m.temperature, m.loss_backend, row_offset=self.rank * n, rows=n)
        else:
            loss = nt_xent(z1, z2, m.temperature, m.loss_backend)
        return loss, feats[:n]
