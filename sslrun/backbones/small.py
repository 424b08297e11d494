"""A small VGG-style ConvNet for quick CPU runs: four conv-BN-ReLU stages, each halving the resolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslrun.backbones import BACKBONES
from sslrun.config import BackboneConfig


class ConvNet(nn.Module):
    """(B, C, H, W) -> (B, feature_dim); channels 32, 64, 128, 256 times ``width``."""

    def __init__(self, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        widths = [max(1, round(c * width)) for c in (32, 64, 128, 256)]
        stages: list[nn.Module] = []
        self._stage_ends: list[int] = []  # index in ``features`` just past each stage's ReLU
        prev = in_channels
        for i, out in enumerate(widths):
            stages += [nn.Conv2d(prev, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            self._stage_ends.append(len(stages))
            if i < len(widths) - 1:
                stages.append(nn.MaxPool2d(2, ceil_mode=True))
            prev = out
        self.features = nn.Sequential(*stages, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.layer_dims = widths
        self.feature_dim = widths[-1]

    def forward_layer(self, x: torch.Tensor, depth: int) -> torch.Tensor:
        """Globally pooled (B, layer_dims[depth - 1]) features after conv stage ``depth`` (1-4)."""
        x = self.features[: self._stage_ends[depth - 1]](x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@BACKBONES.register("convnet")
def build_convnet(cfg: BackboneConfig, in_channels: int, image_size: int) -> ConvNet:
    """Small 4-stage ConvNet (32-256 channels x width)"""
    return ConvNet(in_channels, cfg.width)
