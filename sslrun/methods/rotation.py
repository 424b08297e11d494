"""RotNet (Gidaris et al. 2018, arXiv 1803.07728): predict which of 0, 90, 180, 270 degrees an image was rotated by.
As in the paper every image is shown in all four rotations in the same batch (4B images), which the authors found
better than one random rotation per image. The classifier is a 2-layer MLP on the pooled backbone features; the
features RotNet learns are often best below the last stage (``sslrun finetune eval.layer=layer2|layer3``).
One view, crop and flip only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sslrun.config import POSITIVE_INT, MethodConfig, checked
from sslrun.data.views import single_view
from sslrun.methods import METHODS
from sslrun.methods.base import Inputs, SSLMethod
from sslrun.methods.heads import mlp

ROTATIONS = 4


def rotate_all(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) square images -> (4B, C, H, W) rotated by k * 90 degrees counter-clockwise, k = 0..3 in blocks of
    B, and the (4B,) labels k."""
    rotated = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(ROTATIONS)])
    labels = torch.arange(ROTATIONS, device=images.device).repeat_interleave(len(images))
    return rotated, labels


@METHODS.register("rotation")
class Rotation(SSLMethod):
    """RotNet: classify the rotation (0/90/180/270) of every image"""

    views = single_view()

    def build(self, config: Rotation.Config, inputs: Inputs) -> None:
        self.classifier = mlp(self.backbone.feature_dim, self.config.proj_hidden_dim, ROTATIONS, layers=2)

    def ssl_step(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        images = views[0]
        rotated, labels = rotate_all(images)
        if self.channels_last:
            rotated = rotated.contiguous(memory_format=torch.channels_last)
        feats = self.backbone(rotated)
        logits = self.classifier(feats)
        self.log("rotation_acc", (logits.argmax(1) == labels).float().mean(), on_step=True, on_epoch=False)
        return F.cross_entropy(logits.float(), labels), feats[: len(images)]

    @dataclass
    class Config(MethodConfig):
        proj_hidden_dim: int = checked(512, POSITIVE_INT)  # hidden width of the rotation classifier
