"""Adversarial autoencoder (Makhzani et al. 2016, arXiv 1511.05644): an autoencoder whose code is pushed towards a
prior by a discriminator instead of a KL term. The backbone's pooled features go through a linear layer to a
``latent_dim`` code, the shared ``ConvDecoder`` reconstructs the image from it; a discriminator (an MLP, the paper's
two hidden ReLU layers) tells codes drawn from the prior N(0, I) from the encoder's.

Two players, as the paper's two phases: the autoencoder minimises the per-pixel mean squared error plus
``adv_weight`` times the non-saturating loss of fooling the discriminator (the reconstruction and the generator phase
in one step); the discriminator minimises its binary cross-entropy. ``sslrun finetune`` evaluates the backbone's
features. Samples: the decoder on prior codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sslrun.config import NON_NEGATIVE, POSITIVE, MethodConfig, checked
from sslrun.data.views import single_view
from sslrun.losses import discriminator_bce, generator_non_saturating, reconstruction_mse
from sslrun.methods import METHODS
from sslrun.methods.adversarial import TwoPlayerMethod
from sslrun.methods.base import Inputs
from sslrun.methods.decoders import ConvDecoder, fixed_codes, prior_codes


@METHODS.register("adversarial_autoencoder")
class AdversarialAutoencoder(TwoPlayerMethod):
    """adversarial autoencoder: codes matched to a Gaussian prior by a discriminator"""

    views = single_view()

    def build(self, config: AdversarialAutoencoder.Config, inputs: Inputs) -> None:
        self.to_code = nn.Linear(self.backbone.feature_dim, config.latent_dim)
        self.decoder = ConvDecoder(config.latent_dim, inputs.shape[0], inputs.shape[-1], config.decoder_width)
        h = config.disc_hidden_dim
        self.discriminator = nn.Sequential(
            nn.Linear(config.latent_dim, h),
            nn.ReLU(inplace=True),
            nn.Linear(h, h),
            nn.ReLU(inplace=True),
            nn.Linear(h, 1),
        )

    def players(self) -> tuple[nn.Module, nn.Module]:
        return nn.ModuleList([self.backbone, self.to_code, self.decoder]), self.discriminator

    def ssl_step(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The autoencoder's loss: reconstruction + ``adv_weight`` x fooling the discriminator."""
        images = views[0]
        feats = self.backbone(images)
        code = self.to_code(feats)
        self._codes = code.detach()  # the discriminator's negatives in the second step
        reconstruction = reconstruction_mse(self.decoder(code), images)
        self.log("reconstruction", reconstruction.detach(), on_step=True, on_epoch=False)
        fool = generator_non_saturating(self.discriminator(code).squeeze(1))
        return reconstruction + self.config.adv_weight * fool, feats

    def second_player_loss(self, views: list[torch.Tensor]) -> torch.Tensor:
        """The discriminator's loss: prior codes real, the encoder's codes of this batch (from ``ssl_step``) fake."""
        codes = self._codes
        prior = prior_codes(self, len(codes), codes.shape[1]).to(codes.dtype)
        return discriminator_bce(self.discriminator(prior).squeeze(1), self.discriminator(codes).squeeze(1))

    def image_grids(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        reconstruction = self.decoder(self.to_code(self.backbone(images)))
        prior = fixed_codes(2 * len(images), self.config.latent_dim, self.device)
        return {"reconstruction": torch.cat([images, reconstruction]), "samples": self.decoder(prior)}

    @dataclass
    class Config(MethodConfig):
        latent_dim: int = checked(32, POSITIVE)
        adv_weight: float = checked(0.1, NON_NEGATIVE)
        disc_hidden_dim: int = checked(512, POSITIVE)
        decoder_width: int = checked(128, POSITIVE)
