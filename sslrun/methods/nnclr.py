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

from sslrun.config import POSITIVE, MethodConfig, checked
from sslrun.losses import info_nce, nearest_neighbour
from sslrun.methods import METHODS
from sslrun.methods.base import SSLMethod
from sslrun.methods.heads import projection_mlp
from sslrun.methods.queue import FeatureQueue


@dataclass
class NNCLRConfig(MethodConfig):
    temperature: float = checked(0.2, POSITIVE)
    queue_size: int = checked(4096, POSITIVE)
    pred_hidden_dim: int = checked(512, POSITIVE)


@METHODS.register("nnclr")
class NNCLR(SSLMethod):
    """NNCLR: nearest neighbours from a support queue as positives"""

    Config = NNCLRConfig

    def __init__(self, cfg, in_channels: int, image_size: int, num_classes: int) -> None:
        super().__init__(cfg, in_channels, image_size, num_classes)
        m = self.cfg.method
        self.projector = projection_mlp(self.backbone.feature_dim, m.proj_hidden_dim, m.proj_output_dim)
        self.predictor = projection_mlp(m.proj_output_dim, m.pred_hidden_dim, m.proj_output_dim)
        self.queue = FeatureQueue(m.queue_size, m.proj_output_dim)

    def ssl_step(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        n = views[0].shape[0]
        feats = self.backbone_views(views[:2])
        z = self.projector(feats)
        p1, p2 = self.predictor(z).float().split(n)
        z1, z2 = z.float().split(n)
        support = self.queue.features.clone()
        nn1, nn2 = nearest_neighbour(z1, support), nearest_neighbour(z2, support)
        p1, p2 = self.gather(p1), self.gather(p2)
        t, offset = self.cfg.method.temperature, self.rank * n
        loss = (info_nce(nn1, p2, t, "naive", offset) + info_nce(nn2, p1, t, "naive", offset)) / 2
        self.queue.push(self.gather(F.normalize(z1.detach(), dim=1)))
        return loss, feats[:n]
