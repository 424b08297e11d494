"""DINO (Caron et al. 2021, arXiv 2104.14294): self-distillation without labels. A student (backbone + DINO head)
matches, on every crop, the EMA teacher's centred and sharpened output on the *other* global crops; multi-crop: the
teacher sees the 2 global crops, the student all of them.

The centre is an EMA (0.9) of the teacher's mean output over the global batch: the batch sum is all-reduced under
DDP. The student's last layer is frozen during the first ``freeze_last_layer_epochs`` (capped at 10% of the run),
the teacher's never (LightlySSL #1596 froze the wrong one). Defaults scaled for small images and short runs: head
512 hidden, 128 bottleneck (``proj_output_dim``), 1024 outputs (official 2048 / 256 / 65536; solo-learn CIFAR 4096
outputs), BatchNorm in the head (DINO's ``use_bn_in_head``; without it the ResNet features, all positive and alike,
mapped every image to one point and the loss sat at ln K from the first epoch on Fashion-MNIST), student / teacher
temperatures 0.1 / 0.04, momentum 0.9 -> 1 (official 0.996 for 100-epoch ImageNet runs; over a run of a few hundred
steps a slow teacher hardly leaves its random init: at 3 epochs 0.9 with 1024 outputs reached loss 5.5 of ln K = 6.9
where 0.99 with 2048 stayed at 7.3 of 7.6), 2 global + 2 local crops. Not taken: the weight-decay
schedule 0.04 -> 0.4 and gradient clipping at 3 (the run's optimizer and ``trainer.gradient_clip_val`` apply).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from sslrun.config import NON_NEGATIVE, POSITIVE, UNIT, ProjectorConfig, checked
from sslrun.losses import dino
from sslrun.methods import METHODS
from sslrun.methods.base import Inputs, SSLMethod
from sslrun.methods.heads import DINOHead
from sslrun.methods.momentum import MomentumConfig, teacher_embeddings
from sslrun.methods.multicrop import MultiCropConfig, multi_crop_views
from sslrun.methods.parts import backbone_views


@METHODS.register("dino")
class DINO(SSLMethod):
    """DINO: self-distillation to an EMA teacher with centring and sharpening"""

    teachers = ("backbone", "head")

    def build(self, config: DINO.Config, inputs: Inputs) -> None:
        self.head = DINOHead(
            self.backbone.feature_dim, config.proj_hidden_dim, config.proj_output_dim, config.out_dim, config.head_bn
        )
        self.register_buffer("center", torch.zeros(1, config.out_dim))

    @classmethod
    def view_specs(cls, config: DINO.Config):
        return multi_crop_views(config)

    def ssl_step(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.config
        n = views[0].shape[0]
        feats = backbone_views(self.backbone, views)
        student = self.head(feats).float().split(n)
        teacher = teacher_embeddings(self.teacher_backbone, self.teacher_head, views[:2]).float()
        loss = dino(list(student), list(teacher.split(n)), self.center, m.student_temperature, m.teacher_temperature)
        self.update_center(teacher)
        return loss, feats[:n]

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """center <- momentum * center + (1 - momentum) * mean of the teacher outputs over the global batch."""
        total = teacher.sum(dim=0, keepdim=True)
        rows = len(teacher) * self.world_size
        if self.world_size > 1 and dist.is_initialized():
            dist.all_reduce(total)
        m = self.config.center_momentum
        self.center.mul_(m).add_(total / rows, alpha=1 - m)

    def on_after_backward(self) -> None:
        if self.trainer.global_step < self.epochs_to_steps(self.config.freeze_last_layer_epochs):
            self.head.last_layer.weight.grad = None

    @dataclass
    class Config(MomentumConfig, MultiCropConfig, ProjectorConfig):
        out_dim: int = checked(1024, POSITIVE)
        head_bn: bool = True
        momentum_base: float = checked(0.9, UNIT)
        student_temperature: float = checked(0.1, POSITIVE)
        teacher_temperature: float = checked(0.04, POSITIVE)
        center_momentum: float = checked(0.9, UNIT)
        freeze_last_layer_epochs: float = checked(1.0, NON_NEGATIVE)
