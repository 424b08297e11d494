"""DCGAN (Radford et al. 2016, arXiv 1511.06434) as a representation learner: the discriminator's trunk is the
backbone, and that trunk is what ``sslrun finetune`` evaluates, as DCGAN evaluated its discriminator's features.

Generator: the shared ``ConvDecoder`` (DCGAN's: transposed convolutions with BN and ReLU) from a ``latent_dim``
standard normal code, its tanh output mapped onto the range of the real (normalised) pixels, measured on the first
batch and kept as a buffer (DCGAN's tanh against images scaled to [-1, 1]). Discriminator: the backbone and a linear
real/fake logit on its pooled features. Losses: the discriminator's binary cross-entropy and the non-saturating
generator loss (Goodfellow et al. 2014). Real and fake images go through the discriminator as separate batches
(DCGAN's practice), and the fake passes leave the batch-norm running statistics alone, so the evaluated trunk
normalises by real-image statistics. Optimiser: Adam at DCGAN's lr 2e-4, betas (0.5, 0.999), constant
(``optim=adam``, the method's default). Samples from a fixed code are written each evaluation epoch
(``images/samples_epochNNN.png``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sslrun.config import HALF_OPEN_UNIT, POSITIVE, MethodConfig, checked
from sslrun.data.views import single_view
from sslrun.losses import discriminator_bce, generator_non_saturating
from sslrun.methods import METHODS
from sslrun.methods.adversarial import TwoPlayerMethod, frozen_batchnorm_stats
from sslrun.methods.base import Inputs
from sslrun.methods.decoders import ConvDecoder, fixed_codes, prior_codes
from sslrun.methods.parts import gather


@METHODS.register("gan")
class GAN(TwoPlayerMethod):
    """DCGAN; the discriminator's trunk is the encoder"""

    views = single_view()

    def build(self, config: GAN.Config, inputs: Inputs) -> None:
        channels = inputs.shape[0]
        self.generator = ConvDecoder(config.latent_dim, channels, inputs.shape[-1], config.generator_width)
        self.real_fake = nn.Linear(self.backbone.feature_dim, 1)
        # Per-channel (min, max) of real normalised pixels, measured on the first batch (all ranks): the generator's
        # tanh output is mapped onto it, as DCGAN's tanh matches images scaled to [-1, 1].
        self.register_buffer("pixel_range", torch.full((2, channels), float("nan")))

    def players(self) -> tuple[nn.Module, nn.Module]:
        return nn.ModuleList([self.backbone, self.real_fake]), self.generator

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) codes -> (B, C, H, W) images within the real pixels' range."""
        low, high = (r.view(1, -1, 1, 1) for r in self.pixel_range)
        return low + (high - low) * (torch.tanh(self.generator(z)) + 1) / 2

    def fakes(self, n: int) -> torch.Tensor:
        return self.generate(prior_codes(self, n, self.config.latent_dim))

    def measure_range(self, real: torch.Tensor) -> None:
        if not torch.isnan(self.pixel_range).any():
            return
        flat = real.detach().float().transpose(0, 1).flatten(1)  # (C, B * H * W)
        low, high = gather(flat.amin(1)[None]).amin(0), gather(flat.amax(1)[None]).amax(0)
        self.pixel_range.copy_(torch.stack([low, high]))

    def discriminate(self, images: torch.Tensor) -> torch.Tensor:
        with frozen_batchnorm_stats(self.backbone):
            return self.real_fake(self.backbone(images)).squeeze(1)

    def ssl_step(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The discriminator's loss on real images and (detached) fakes."""
        real = views[0]
        self.measure_range(real)
        feats = self.backbone(real)
        fake_logits = self.discriminate(self.fakes(len(real)).detach())
        loss = discriminator_bce(self.real_fake(feats).squeeze(1), fake_logits, self.config.real_label)
        return loss, feats

    def second_player_loss(self, views: list[torch.Tensor]) -> torch.Tensor:
        return generator_non_saturating(self.discriminate(self.fakes(len(views[0]))))

    def image_grids(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"samples": self.generate(fixed_codes(4 * len(images), self.config.latent_dim, self.device))}

    @dataclass
    class Config(MethodConfig):
        latent_dim: int = checked(100, POSITIVE)
        generator_width: int = checked(128, POSITIVE)
        real_label: float = checked(1.0, HALF_OPEN_UNIT)  # < 1: one-sided label smoothing of the real target
