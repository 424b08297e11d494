"""VICReg (Bardes, Ponce & LeCun 2022, arXiv 2105.04906): invariance (MSE between the two views' projections),
variance (a hinge keeping every dimension's std above 1) and covariance (off-diagonal covariance driven to 0).

All three terms are over the global batch: projections are gathered with gradients and every rank computes the same
loss, which equals the single-process one (the official code gathers for variance and covariance only; over the
gathered batch the invariance mean is the same number). Weights 25 / 25 / 1 as the paper; projector scaled for
small images and short runs: 3 layers 512 -> 512 -> 512 (official 8192 x 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sslrun.config import NON_NEGATIVE, POSITIVE, MethodConfig, checked
from sslrun.losses import vicreg
from sslrun.methods import METHODS
from sslrun.methods.base import SSLMethod
from sslrun.methods.heads import mlp


@dataclass
class VICRegConfig(MethodConfig):
    proj_output_dim: int = checked(512, POSITIVE)
    sim_weight: float = checked(25.0, NON_NEGATIVE)
    var_weight: float = checked(25.0, NON_NEGATIVE)
    cov_weight: float = checked(1.0, NON_NEGATIVE)


@METHODS.register("vicreg")
class VICReg(SSLMethod):
    """VICReg: variance-invariance-covariance regularisation"""

    Config = VICRegConfig

    def __init__(self, cfg, in_channels: int, image_size: int, num_classes: int) -> None:
        super().__init__(cfg, in_channels, image_size, num_classes)
        m = self.cfg.method
        self.projector = mlp(self.backbone.feature_dim, m.proj_hidden_dim, m.proj_output_dim, layers=3)

    def ssl_step(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        n = views[0].shape[0]
        feats = self.backbone_views(views[:2])
        z1, z2 = self.projector(feats).split(n)
        m = self.cfg.method
        loss = vicreg(self.gather(z1), self.gather(z2), m.sim_weight, m.var_weight, m.cov_weight)
        return loss, feats[:n]
