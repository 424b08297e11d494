"""NNCLR (Dwibedi et al. 2021, arXiv 2104.14548): the positive of a view is the nearest neighbour of its projection
in a support set (a queue of past projections), scored against the other view's prediction with InfoNCE over the
global batch (positives at arange(n) + n x rank), symmetrised.

The projections are gathered from every rank before they are enqueued (solo-learn #229: without it training
diverged on 16 GPUs). Defaults scaled for small images and short runs: projector 512 -> 128, predictor 512 -> 128
(solo-learn 2048 -> 256, predictor 4096), support set 4096 (LightlySSL's; solo-learn's 65536 exceeds a small
dataset), temperature 0.2 (solo-learn).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sslrun.config import POSITIVE, ProjectorConfig, checked
from sslrun.losses import info_nce, nearest_neighbour
from sslrun.methods import METHODS
from sslrun.methods.base import Inputs, SSLMethod
from sslrun.methods.heads import projection_mlp
from sslrun.methods.parts import backbone_views, gather
from sslrun.methods.queue import FeatureQueue


@METHODS.register("nnclr")
class NNCLR(SSLMethod):
    """NNCLR: nearest neighbours from a support queue as positives"""

    def build(self, config: NNCLR.Config, inputs: Inputs) -> None:
        self.projector = projection_mlp(self.backbone.feature_dim, config.proj_hidden_dim, config.proj_output_dim)
        self.predictor = projection_mlp(config.proj_output_dim, config.pred_hidden_dim, config.proj_output_dim)
        self.queue = FeatureQueue(config.queue_size, config.proj_output_dim)

    def ssl_step(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        n = views[0].shape[0]
        feats = backbone_views(self.backbone, views[:2])
        z = self.projector(feats)
        p1, p2 = self.predictor(z).float().split(n)
        z1, z2 = z.float().split(n)
        support = self.queue.features.clone()
        nn1, nn2 = nearest_neighbour(z1, support), nearest_neighbour(z2, support)
        p1, p2 = gather(p1), gather(p2)
        t, offset = self.config.temperature, self.rank * n
        loss = (info_nce(nn1, p2, t, "naive", offset) + info_nce(nn2, p1, t, "naive", offset)) / 2
        self.queue.push(gather(F.normalize(z1.detach(), dim=1)))
        return loss, feats[:n]

    @dataclass
    class Config(ProjectorConfig):
        temperature: float = checked(0.2, POSITIVE)
        queue_size: int = checked(4096, POSITIVE)
        pred_hidden_dim: int = checked(512, POSITIVE)
