"""SimSiam (Chen & He 2021, arXiv 2011.10566): one network, a predictor on one branch and a stop-gradient on the
other; loss -1/2 [cos(p1, sg z2) + cos(p2, sg z1)]. No negatives, no teacher, nothing gathered.

Projector as the official one: 3 layers, each Linear-BN(-ReLU), the last BatchNorm without affine; predictor a
bottleneck 2-layer MLP (official 2048 -> 512 -> 2048). Scaled for small backbones: 512 -> 512 -> 512, predictor
hidden 128. Its known failure is collapse (the loss goes to -1 early): watch ``z_std`` in the log, the
per-dimension std of the normalised projections, which is 1/sqrt(D) for spread-out embeddings and 0 when collapsed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sslrun.config import POSITIVE, ProjectorConfig, checked
from sslrun.losses import negative_cosine
from sslrun.methods import METHODS
from sslrun.methods.base import Inputs, SSLMethod
from sslrun.methods.heads import mlp
from sslrun.methods.parts import backbone_views


@METHODS.register("simsiam")
class SimSiam(SSLMethod):
    """SimSiam: predictor + stop-gradient, no negatives"""

    def build(self, config: SimSiam.Config, inputs: Inputs) -> None:
        dim = config.proj_output_dim
        self.projector = mlp(self.backbone.feature_dim, config.proj_hidden_dim, dim, layers=3, last_bn=True)
        self.predictor = mlp(dim, config.pred_hidden_dim, dim, layers=2)

    def ssl_step(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        n = views[0].shape[0]
        feats = backbone_views(self.backbone, views[:2])
        z = self.projector(feats)
        p1, p2 = self.predictor(z).split(n)
        z1, z2 = z.split(n)
        self.log("z_std", F.normalize(z1.detach().float(), dim=1).std(dim=0).mean(), on_step=True, on_epoch=False)
        return (negative_cosine(p1, z2) + negative_cosine(p2, z1)) / 2, feats[:n]

    @dataclass
    class Config(ProjectorConfig):
        proj_output_dim: int = checked(512, POSITIVE)
        pred_hidden_dim: int = checked(128, POSITIVE)
