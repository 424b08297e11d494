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

from sslrun.config import NON_NEGATIVE, POSITIVE, ProjectorConfig, checked
from sslrun.losses import vicreg
from sslrun.methods import METHODS
from sslrun.methods.base import Inputs, SSLMethod
from sslrun.methods.heads import mlp
from sslrun.methods.parts import backbone_views, gather


@METHODS.register("vicreg")
class VICReg(SSLMethod):
    """VICReg: variance-invariance-covariance regularisation"""

    def build(self, config: VICReg.Config, inputs: Inputs) -> None:
        self.projector = mlp(self.backbone.feature_dim, config.proj_hidden_dim, config.proj_output_dim, layers=3)

    def ssl_step(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        n = views[0].shape[0]
        feats = backbone_views(self.backbone, views[:2])
        z1, z2 = self.projector(feats).split(n)
        m = self.config
        loss = vicreg(gather(z1), gather(z2), m.sim_weight, m.var_weight, m.cov_weight)
        return loss, feats[:n]

    @dataclass
    class Config(ProjectorConfig):
        proj_output_dim: int = checked(512, POSITIVE)
        sim_weight: float = checked(25.0, NON_NEGATIVE)
        var_weight: float = checked(25.0, NON_NEGATIVE)
        cov_weight: float = checked(1.0, NON_NEGATIVE)
