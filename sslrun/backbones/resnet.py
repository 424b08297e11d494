"""ResNet-18/34/50 (He et al. 2016, arXiv 1512.03385) from torchvision blocks, with a width multiplier and the
CIFAR stem (3x3 stride-1 conv, no max-pool) used by SimCLR/solo-learn/LightlySSL for 32x32 inputs.

Parameter and buffer names match ``torchvision.models.resnet*`` (conv1, bn1, layer1..4; no extra keys), so a
width-1.0 backbone loads into torchvision's model with ``load_state_dict(sd, strict=True)`` once that model is made
headless the same way: ``fc = nn.Identity()``; for the CIFAR stem also ``conv1 = nn.Conv2d(C, 64, 3, 1, 1,
bias=False)`` and ``maxpool = nn.Identity()``; for the ImageNet stem on C != 3 channels ``conv1 = nn.Conv2d(C, 64, 7,
2, 3, bias=False)``. ``sslrun export`` prints that recipe for each backbone.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from sslrun.backbones import BACKBONES
from sslrun.config import BackboneConfig

CIFAR_STEM_MAX_SIZE = 64


class ResNet(nn.Module):
    """Headless ResNet: (B, C, H, W) -> (B, feature_dim) after global average pooling."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        in_channels: int = 3,
        width: float = 1.0,
        cifar_stem: bool = False,
    ) -> None:
        super().__init__()
        planes = [max(1, round(p * width)) for p in (64, 128, 256, 512)]
        self.inplanes = planes[0]
        self.stem = "cifar" if cifar_stem else "imagenet"
        if cifar_stem:
            self.conv1 = nn.Conv2d(in_channels, planes[0], kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, planes[0], kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, planes[0], layers[0], stride=1)
        self.layer2 = self._make_layer(block, planes[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, planes[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, planes[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.layer_dims = [p * block.expansion for p in planes]
        self.feature_dim = self.layer_dims[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_layer(self, x: torch.Tensor, depth: int) -> torch.Tensor:
        """Globally pooled (B, layer_dims[depth - 1]) features after residual layer ``depth`` (1-4)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4)[:depth]:
            x = layer(x)
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_layer(x, 4)


def _use_cifar_stem(stem: str, image_size: int) -> bool:
    if stem == "auto":
        return image_size <= CIFAR_STEM_MAX_SIZE
    return stem == "cifar"


def _builder(block: type[BasicBlock] | type[Bottleneck], layers: list[int], doc: str):
    def build(cfg: BackboneConfig, in_channels: int, image_size: int) -> ResNet:
        return ResNet(block, layers, in_channels, cfg.width, _use_cifar_stem(cfg.stem, image_size))

    build.__doc__ = doc
    return build


BACKBONES.register("resnet18")(
    _builder(BasicBlock, [2, 2, 2, 2], "ResNet-18 (torchvision blocks, width x, CIFAR stem)")
)
BACKBONES.register("resnet34")(
    _builder(BasicBlock, [3, 4, 6, 3], "ResNet-34 (torchvision blocks, width x, CIFAR stem)")
)
BACKBONES.register("resnet50")(
    _builder(Bottleneck, [3, 4, 6, 3], "ResNet-50 (torchvision blocks, width x, CIFAR stem)")
)
