"""SimCLR (Chen et al. 2020, arXiv 2002.05709): two augmented views, a projection head, and the NT-Xent loss
over the global batch; under DDP every rank scores its own rows against the embeddings gathered from all ranks."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from sslrun.config import POSITIVE, ProjectorConfig, checked, one_of
from sslrun.losses import NT_XENT_BACKENDS, nt_xent, resolve_backend
from sslrun.methods import METHODS
from sslrun.methods.base import Inputs, SSLMethod
from sslrun.methods.heads import projection_mlp
from sslrun.methods.parts import backbone_views, gather

log = logging.getLogger(__name__)


@METHODS.register("contrastive")
class Contrastive(SSLMethod):
    """SimCLR: NT-Xent over 2N views (backends: auto, triton, chunked, naive)"""

    def build(self, config: Contrastive.Config, inputs: Inputs) -> None:
        self.projector = projection_mlp(self.backbone.feature_dim, config.proj_hidden_dim, config.proj_output_dim)

    def on_fit_start(self) -> None:
        chosen = resolve_backend(self.config.loss_backend, self.device)
        log.info("contrastive loss backend: %s (requested %s)", chosen, self.config.loss_backend)

    def ssl_step(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        n = views[0].shape[0]
        feats = backbone_views(self.backbone, views)
        z1, z2 = self.projector(feats).float().split(n)
        m = self.config
        if m.gather and self.world_size > 1:
            z1, z2 = gather(z1), gather(z2)
            loss = nt_xent(z1, z2, m.temperature, m.loss_backend, row_offset=self.rank * n, rows=n)
        else:
            loss = nt_xent(z1, z2, m.temperature, m.loss_backend)
        return loss, feats[:n]

    @dataclass
    class Config(ProjectorConfig):
        temperature: float = checked(0.2, POSITIVE)
        loss_backend: str = checked("auto", one_of(*NT_XENT_BACKENDS))
        gather: bool = True
