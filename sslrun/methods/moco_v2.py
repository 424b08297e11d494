"""MoCo v2 (He et al. 2020, arXiv 1911.05722; Chen et al. 2020, arXiv 2003.04297): a query encoder, a momentum
(EMA) key encoder and a queue of past keys as negatives; MLP projection head. Symmetrised as in solo-learn's
``mocov2plus``: each view is a query against the other's key, and both keys are enqueued after both halves of the
loss (enqueueing between them would score view 2's queries against their own keys).

Defaults, scaled for small images and short runs: queue 4096 (the official CIFAR demo's, which saturates there),
temperature 0.2, momentum 0.99 -> 0.999 cosine (solo-learn); projector 512 -> 128 for the small backbones. Under DDP
the keys are gathered from every rank before they are enqueued, so every rank holds the single-process queue.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sslrun.config import POSITIVE, UNIT, ProjectorConfig, checked
from sslrun.losses import moco
from sslrun.methods import METHODS
from sslrun.methods.base import Inputs, SSLMethod
from sslrun.methods.heads import projection_mlp
from sslrun.methods.momentum import MomentumConfig, teacher_embeddings
from sslrun.methods.parts import backbone_views, gather
from sslrun.methods.queue import FeatureQueue


@METHODS.register("moco_v2")
class MoCoV2(SSLMethod):
    """MoCo v2: InfoNCE against a queue of momentum-encoder keys"""

    teachers = ("backbone", "projector")

    def build(self, config: MoCoV2.Config, inputs: Inputs) -> None:
        self.projector = projection_mlp(self.backbone.feature_dim, config.proj_hidden_dim, config.proj_output_dim)
        self.queue = FeatureQueue(config.queue_size, config.proj_output_dim)

    def ssl_step(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        n = views[0].shape[0]
        feats = backbone_views(self.backbone, views[:2])
        q1, q2 = self.projector(feats).split(n)
        k1, k2 = teacher_embeddings(self.teacher_backbone, self.teacher_projector, views[:2]).float().split(n)
        t = self.config.temperature
        queue = self.queue.features.clone()
        loss = (moco(q1, k2, queue, t) + moco(q2, k1, queue, t)) / 2
        self.queue.push(F.normalize(torch.cat([gather(k1), gather(k2)]), dim=1))
        return loss, feats[:n]

    @dataclass
    class Config(MomentumConfig, ProjectorConfig):
        temperature: float = checked(0.2, POSITIVE)
        queue_size: int = checked(4096, POSITIVE)
        momentum_base: float = checked(0.99, UNIT)
        momentum_final: float = checked(0.999, UNIT)
