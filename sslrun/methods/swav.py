"""SwAV (Caron et al. 2020, arXiv 2006.09882): cluster assignments (codes) of the two global views are computed with
Sinkhorn-Knopp over the global batch (equal mass per prototype) and each is predicted from every other crop's
prototype scores ("swapped prediction"); multi-crop adds small local views that are predicted from but never
assigned.

Under DDP the codes come from ``sinkhorn(..., distributed=True)``, whose normalising sums are all-reduced (B = local
batch x world size), as the official ``distributed_sinkhorn``. Prototypes are re-normalised before every step and
frozen for the first ``freeze_prototypes_epochs`` (capped at 10% of the run; official: 313 iterations). Defaults
scaled for small images and short runs: 100 prototypes (official 3000 for ImageNet; a small dataset needs few, swav
issue #23), projector 512 -> 128, temperature 0.1, epsilon 0.05, 3 Sinkhorn iterations, two global crops and no
local ones (official 2 + 6 at 224 px; solo-learn's CIFAR setting also has none: on Fashion-MNIST at 3 epochs two 12
px local crops gave kNN top-1 0.672 against 0.703 without; ``method.local_crops=N`` turns them on). No feature
queue: the official code needs one when the batch is smaller than the number of prototypes; at batch 256 with 100
prototypes it is not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sslrun.config import NON_NEGATIVE, POSITIVE, ProjectorConfig, checked
from sslrun.losses import sinkhorn, swav
from sslrun.methods import METHODS
from sslrun.methods.base import Inputs, SSLMethod
from sslrun.methods.heads import Prototypes, projection_mlp
from sslrun.methods.multicrop import MultiCropConfig, multi_crop_views
from sslrun.methods.parts import backbone_views


@METHODS.register("swav")
class SwAV(SSLMethod):
    """SwAV: swapped prediction of Sinkhorn cluster codes, multi-crop"""

    @classmethod
    def view_specs(cls, config: SwAV.Config):
        return multi_crop_views(config)

    def build(self, config: SwAV.Config, inputs: Inputs) -> None:
        self.projector = projection_mlp(self.backbone.feature_dim, config.proj_hidden_dim, config.proj_output_dim)
        self.prototypes = Prototypes(config.proj_output_dim, config.num_prototypes)

    def ssl_step(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.config
        n = views[0].shape[0]
        self.prototypes.normalize_()
        feats = backbone_views(self.backbone, views)
        scores = self.prototypes(self.projector(feats).float()).split(n)
        codes = [sinkhorn(s.detach(), m.epsilon, m.sinkhorn_iterations, self.world_size > 1) for s in scores[:2]]
        return swav(list(scores), codes, m.temperature), feats[:n]

    def on_after_backward(self) -> None:
        if self.trainer.global_step < self.epochs_to_steps(self.config.freeze_prototypes_epochs):
            self.prototypes.weight.grad = None

    @dataclass
    class Config(MultiCropConfig, ProjectorConfig):
        num_prototypes: int = checked(100, POSITIVE)
        temperature: float = checked(0.1, POSITIVE)
        epsilon: float = checked(0.05, POSITIVE)
        sinkhorn_iterations: int = checked(3, POSITIVE)
        local_crops: int = checked(0, NON_NEGATIVE)
        global_crop_scale: list[float] = field(default_factory=lambda: [0.14, 1.0])
        local_crop_scale: list[float] = field(default_factory=lambda: [0.05, 0.14])
        freeze_prototypes_epochs: float = checked(1.0, NON_NEGATIVE)
