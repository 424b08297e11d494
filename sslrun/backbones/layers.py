"""Features below the last stage (``sslrun finetune eval.layer=<name>``): pretext tasks often learn their best
features in the middle of the network (RotNet, Gidaris et al. 2018: conv block 2 beats the last block on CIFAR-10).

Every backbone has four stages named ``layer1`` .. ``layer4`` (ResNet: its four residual layers; ConvNet: its four
conv stages; ViT: the blocks in four equal groups) and implements ``forward_layer(x, depth)`` -> pooled (B, C)
features after stage ``depth`` (1-4; depth 4 is ``forward``), with the widths in ``layer_dims``. A timm or
torchvision model is also cut after any of its own modules by name (``eval.layer=stages.2``).
"""

from __future__ import annotations

import torch
from torch import nn

LAYERS = ("layer1", "layer2", "layer3", "layer4")
LAST = "last"


class LayerFeatures(nn.Module):
    """The backbone cut after one stage: (B, C, H, W) -> pooled (B, feature_dim) features of that stage."""

    def __init__(self, backbone: nn.Module, layer: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.depth = LAYERS.index(layer) + 1
        self.feature_dim = backbone.layer_dims[self.depth - 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_layer(x, self.depth)


def at_layer(backbone: nn.Module, layer: str) -> nn.Module:
    """``backbone`` itself for ``last`` (or ``layer4``), else its features after the named stage; a timm or
    torchvision model also takes the name of one of its own modules (``stages.2``, ``features.8``)."""
    if layer in (LAST, LAYERS[-1]):
        return backbone
    if layer in LAYERS:
        return LayerFeatures(backbone, layer)
    if hasattr(backbone, "named_stage"):
        return backbone.named_stage(layer)
    raise ValueError(f"eval.layer={layer!r} is not one of: {LAST}, {', '.join(LAYERS)}")
