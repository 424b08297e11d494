"""Encoders. Each registry entry builds ``nn.Module`` mapping (B, C, H, W) images to (B, feature_dim) features."""

from sslrun.registry import Registry

BACKBONES = Registry("backbone")

from sslrun.backbones import library, resnet, small, vit  # noqa: E402,F401  (registration side effects)

__all__ = ["BACKBONES"]
