"""MoCo v3 (Chen, Xie & He 2021, arXiv 2104.02057): query encoder with projector and predictor, a momentum key
encoder (backbone and projector), and InfoNCE of each view's queries against the other view's keys gathered from
every rank (positives at arange(n) + n x rank), scaled by 2 x temperature, symmetrised. No queue.

Defaults scaled for small images and short runs: projector 3 layers 512 -> 512 -> 128 ending in BatchNorm without
affine, predictor 2 layers 512 -> 128 (official ResNet: 4096 / 256); temperature 0.2 (solo-learn's CIFAR setting;
the official 1.0 is for batches of 4096); momentum 0.99 -> 1 cosine as the official code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sslrun.config import POSITIVE, ProjectorConfig, checked
from sslrun.losses import info_nce
from sslrun.methods import METHODS
from sslrun.methods.base import Inputs, SSLMethod
from sslrun.methods.heads import mlp
from sslrun.methods.momentum import MomentumConfig, teacher_embeddings
from sslrun.methods.parts import backbone_views, gather


@METHODS.register("moco_v3")
class MoCoV3(SSLMethod):
    """MoCo v3: symmetric InfoNCE against momentum keys of the global batch"""

    teachers = ("backbone", "projector")

    def build(self, config: MoCoV3.Config, inputs: Inputs) -> None:
        dim = config.proj_output_dim
        self.projector = mlp(self.backbone.feature_dim, config.proj_hidden_dim, dim, layers=3, last_bn=True)
        self.predictor = mlp(dim, config.pred_hidden_dim, dim, layers=2)

    def ssl_step(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        n = views[0].shape[0]
        feats = backbone_views(self.backbone, views[:2])
        q1, q2 = self.predictor(self.projector(feats)).split(n)
        k1, k2 = teacher_embeddings(self.teacher_backbone, self.teacher_projector, views[:2]).split(n)
        k1, k2 = gather(k1.float()), gather(k2.float())
        t = self.config.temperature
        offset = self.rank * n
        loss = (info_nce(q1, k2, t, "naive", offset) + info_nce(q2, k1, t, "naive", offset)) * 2 * t
        return loss, feats[:n]

    @dataclass
    class Config(MomentumConfig, ProjectorConfig):
        temperature: float = checked(0.2, POSITIVE)
        pred_hidden_dim: int = checked(512, POSITIVE)
