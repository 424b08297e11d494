"""Autoencoder (Hinton & Salakhutdinov 2006, Science 313:504) and, with ``method.noise`` > 0, the denoising
autoencoder (Vincent et al. 2008, ICML): the backbone encodes a (corrupted) view to its feature vector, a
``ConvDecoder`` maps that vector back to the image, and the loss is the per-pixel mean squared error against the
clean view. The code is the pooled backbone feature itself, the vector ``sslrun finetune`` evaluates.

``noise``: standard deviation of additive Gaussian noise in normalised pixels (1.0 is one pixel std); Vincent et al.
also used masking noise, Gaussian is the common modern choice. One view, crop (50-100% of the area) and flip only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sslrun.config import NON_NEGATIVE, POSITIVE, MethodConfig, checked
from sslrun.data.views import single_view
from sslrun.losses import reconstruction_mse
from sslrun.methods import METHODS
from sslrun.methods.base import Inputs, SSLMethod
from sslrun.methods.decoders import ConvDecoder


@METHODS.register("autoencoder")
class Autoencoder(SSLMethod):
    """autoencoder; method.noise > 0: denoising autoencoder"""

    views = single_view()

    def build(self, config: Autoencoder.Config, inputs: Inputs) -> None:
        channels, size = inputs.shape[0], inputs.shape[-1]
        self.decoder = ConvDecoder(self.backbone.feature_dim, channels, size, config.decoder_width)

    def corrupt(self, images: torch.Tensor) -> torch.Tensor:
        if self.config.noise == 0:
            return images
        shape = images.shape[1:]
        noise = self.draw(len(images), lambda m, g: torch.randn((m, *shape), generator=g, device=images.device))
        return images + self.config.noise * noise.to(images.dtype)

    def ssl_step(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        images = views[0]
        feats = self.backbone(self.corrupt(images))
        return reconstruction_mse(self.decoder(feats), images), feats

    def image_grids(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        corrupted = self.corrupt(images)
        rows = [images, corrupted] if self.config.noise else [images]
        return {"reconstruction": torch.cat([*rows, self.decoder(self.backbone(corrupted))])}

    @dataclass
    class Config(MethodConfig):
        noise: float = checked(0.0, NON_NEGATIVE)
        decoder_width: int = checked(128, POSITIVE)
