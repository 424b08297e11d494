"""The image decoder shared by the autoencoders, the VAE, the adversarial autoencoder and the GAN's generator, and the
standard normal codes the latter three decode from (drawn per step for training, fixed for the picture grids).

DCGAN-style (Radford et al. 2016): a linear layer to a small (width, s0, s0) map, then stride-2 transposed
convolutions (BN, ReLU), each halving the channels (down to 16), then a 3x3 convolution to the data's channels. The
start size s0 is ``image_size`` halved while it stays even and at least 4, so the upsamplings land on the image size
exactly (28 px: 7 -> 14 -> 28; 32 px: 4 -> 8 -> 16 -> 32; 96 px: 6 -> ... -> 96). Outputs are normalised pixels, no
final squashing (the data is standardised, not in [-1, 1]).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

MIN_START, MIN_CHANNELS = 4, 16


def upsampling_plan(image_size: int) -> tuple[int, int]:
    """(start size s0, number of 2x upsamplings) with s0 * 2^n = image_size."""
    start, steps = image_size, 0
    while start % 2 == 0 and start // 2 >= MIN_START:
        start, steps = start // 2, steps + 1
    return start, steps


class ConvDecoder(nn.Module):
    """(B, in_dim) codes -> (B, channels, image_size, image_size) normalised pixels."""

    def __init__(self, in_dim: int, channels: int, image_size: int, width: int = 128) -> None:
        super().__init__()
        self.start, steps = upsampling_plan(image_size)
        self.width = width
        self.fc = nn.Linear(in_dim, width * self.start * self.start)
        layers: list[nn.Module] = [nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        c = width
        for _ in range(steps):
            out = max(MIN_CHANNELS, c // 2)
            layers += [nn.ConvTranspose2d(c, out, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(out)]
            layers.append(nn.ReLU(inplace=True))
            c = out
        layers.append(nn.Conv2d(c, channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, self.width, self.start, self.start))


def prior_codes(method: Any, n: int, dim: int) -> torch.Tensor:
    """(n, dim) standard normal codes for this rank's ``n`` rows, drawn for the global batch (``SSLMethod.draw``):
    the VAE's reparameterisation noise, the adversarial autoencoder's prior, the GAN's latents."""
    return method.draw(n, lambda m, g: torch.randn((m, dim), generator=g, device=method.device))


def fixed_codes(n: int, dim: int, device: torch.device) -> torch.Tensor:
    """(n, dim) standard normal codes from seed 0: the same samples in every epoch's picture grid."""
    return torch.randn((n, dim), generator=torch.Generator(device).manual_seed(0), device=device)
