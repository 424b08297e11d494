"""Variational autoencoder (Kingma & Welling 2014, arXiv 1312.6114): the backbone's feature vector gives the mean and
log-variance of a diagonal Gaussian posterior over a ``latent_dim`` code (two linear heads); a code drawn with the
reparameterisation trick goes through the shared ``ConvDecoder``; the loss is the negative ELBO per pixel with a
unit-variance Gaussian decoder on normalised pixels, KL weighted by ``beta`` (beta-VAE, Higgins et al. 2017).
``sslrun finetune`` evaluates the backbone's feature vector (the input of the mean head). Samples: the decoder on
codes drawn from the prior. One view, crop and flip only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sslrun.config import NON_NEGATIVE, POSITIVE, MethodConfig, checked
from sslrun.data.views import single_view
from sslrun.losses import gaussian_kl, vae
from sslrun.methods import METHODS
from sslrun.methods.base import Inputs, SSLMethod
from sslrun.methods.decoders import ConvDecoder, fixed_codes, prior_codes


@METHODS.register("vae")
class VAE(SSLMethod):
    """variational autoencoder (negative ELBO, beta-weighted KL)"""

    views = single_view()

    def build(self, config: VAE.Config, inputs: Inputs) -> None:
        self.mu = nn.Linear(self.backbone.feature_dim, config.latent_dim)
        self.logvar = nn.Linear(self.backbone.feature_dim, config.latent_dim)
        self.decoder = ConvDecoder(config.latent_dim, inputs.shape[0], inputs.shape[-1], config.decoder_width)

    def ssl_step(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        images = views[0]
        feats = self.backbone(images)
        mu, logvar = self.mu(feats), self.logvar(feats)
        z = mu + (0.5 * logvar).exp() * prior_codes(self, len(images), mu.shape[1]).to(mu.dtype)
        loss = vae(self.decoder(z), images, mu, logvar, self.config.beta)
        self.log("kl", gaussian_kl(mu.detach(), logvar.detach()), on_step=True, on_epoch=False)
        return loss, feats

    def image_grids(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        reconstruction = self.decoder(self.mu(self.backbone(images)))
        prior = fixed_codes(2 * len(images), self.config.latent_dim, self.device)
        return {"reconstruction": torch.cat([images, reconstruction]), "samples": self.decoder(prior)}

    @dataclass
    class Config(MethodConfig):
        latent_dim: int = checked(64, POSITIVE)
        beta: float = checked(1.0, NON_NEGATIVE)
        decoder_width: int = checked(128, POSITIVE)
