"""BYOL (Grill et al. 2020, arXiv 2006.07733): an online network (backbone, projector, predictor) predicts the
projection of the other view made by an EMA target network; loss 2 - 2 cos(p, z_target), symmetrised (summed over
the two directions, as the paper and solo-learn). No negatives, so nothing is gathered: each row's loss is its own.

Views: BYOL's asymmetric pair (blur 1.0 / 0.1, solarize 0 / 0.2); on the small-image recipe, which does not blur,
only the solarization differs. Defaults scaled for small images and short runs: projector 512 -> 128, predictor
512 -> 128 (solo-learn 4096 -> 256); momentum 0.9 -> 1 cosine over the run's optimizer steps (BYOL and solo-learn
start at 0.99-0.996 for runs of 300-1000 epochs; over a few hundred steps a slow target hardly leaves its random
init: on Fashion-MNIST at 3 epochs kNN top-1 0.707 with 0.9 against 0.692 with 0.99; BYOL's paper, table 5b, still
trains well from 0.9).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sslrun.config import POSITIVE, UNIT, ProjectorConfig, checked
from sslrun.data.views import ViewSpec
from sslrun.losses import byol
from sslrun.methods import METHODS
from sslrun.methods.base import Inputs, SSLMethod
from sslrun.methods.heads import projection_mlp
from sslrun.methods.momentum import MomentumConfig, teacher_embeddings
from sslrun.methods.parts import backbone_views

BYOL_VIEWS = (ViewSpec(blur_p=1.0, solarize_p=0.0), ViewSpec(blur_p=0.1, solarize_p=0.2))


@METHODS.register("byol")
class BYOL(SSLMethod):
    """BYOL: predict the EMA target's projection of the other view"""

    views = BYOL_VIEWS
    teachers = ("backbone", "projector")

    def build(self, config: BYOL.Config, inputs: Inputs) -> None:
        self.projector = projection_mlp(self.backbone.feature_dim, config.proj_hidden_dim, config.proj_output_dim)
        self.predictor = projection_mlp(config.proj_output_dim, config.pred_hidden_dim, config.proj_output_dim)

    def ssl_step(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        n = views[0].shape[0]
        feats = backbone_views(self.backbone, views[:2])
        p1, p2 = self.predictor(self.projector(feats)).split(n)
        z1, z2 = teacher_embeddings(self.teacher_backbone, self.teacher_projector, views[:2]).split(n)
        self.log("z_std", F.normalize(z1.float(), dim=1).std(dim=0).mean(), on_step=True, on_epoch=False)
        return byol(p1, z2) + byol(p2, z1), feats[:n]

    @dataclass
    class Config(MomentumConfig, ProjectorConfig):
        pred_hidden_dim: int = checked(512, POSITIVE)
        momentum_base: float = checked(0.9, UNIT)
