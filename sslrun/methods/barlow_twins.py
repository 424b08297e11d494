"""Barlow Twins (Zbontar et al. 2021, arXiv 2103.03230): the cross-correlation matrix of the two views' standardised
projections is driven to the identity: sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2.

C is over the global batch: the projections are gathered with gradients from every rank and each rank computes the
same loss (a raw ``all_reduce`` of C, as the official code and solo-learn use, has no backward and leaves gradients
1/world_size too small). Defaults scaled for small images and short runs: projector 3 layers 512 -> 512 -> 512
(official 8192 x 3), lambda 5e-3 (0.0051 official); the loss is multiplied by ``loss_scale`` 0.1 (solo-learn's
CIFAR setting): the sum over 512 dimensions is large, and biases and norm weights are outside LARS's trust ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sslrun.config import NON_NEGATIVE, POSITIVE, ProjectorConfig, checked
from sslrun.losses import barlow_twins
from sslrun.methods import METHODS
from sslrun.methods.base import Inputs, SSLMethod
from sslrun.methods.heads import mlp
from sslrun.methods.parts import backbone_views, gather


@METHODS.register("barlow_twins")
class BarlowTwins(SSLMethod):
    """Barlow Twins: cross-correlation of the two views to the identity"""

    def build(self, config: BarlowTwins.Config, inputs: Inputs) -> None:
        self.projector = mlp(
            self.backbone.feature_dim, config.proj_hidden_dim, config.proj_output_dim, layers=3, last_bias=False
        )

    def ssl_step(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        n = views[0].shape[0]
        feats = backbone_views(self.backbone, views[:2])
        z1, z2 = self.projector(feats).split(n)
        m = self.config
        return m.loss_scale * barlow_twins(gather(z1), gather(z2), m.lambd), feats[:n]

    @dataclass
    class Config(ProjectorConfig):
        proj_output_dim: int = checked(512, POSITIVE)
        lambd: float = checked(5e-3, NON_NEGATIVE)
        loss_scale: float = checked(0.1, NON_NEGATIVE)
