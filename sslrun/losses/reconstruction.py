"""Losses of the reconstruction, generative and pretext methods, as pure functions: tensors in, a () fp32 scalar out.

Pixels are the data's normalised pixels (mean 0, std 1 per channel over the training split), so a mean squared error
of 1 is what predicting the mean image scores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def reconstruction_mse(reconstruction: Tensor, target: Tensor) -> Tensor:
    """Autoencoders (Hinton & Salakhutdinov 2006; denoising: Vincent et al. 2008): mean squared error per pixel
    between (B, C, H, W) reconstructions and the clean targets."""
    if reconstruction.shape != target.shape:
        raise ValueError(f"reconstruction {tuple(reconstruction.shape)} and target {tuple(target.shape)} differ")
    return F.mse_loss(reconstruction.float(), target.float())


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) in closed form, summed over the (B, K) latent dimensions and averaged
    over rows: -1/2 sum(1 + logvar - mu^2 - exp(logvar)) (Kingma & Welling 2014, appendix B)."""
    mu, logvar = mu.float(), logvar.float()
    return (-0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(dim=1)).mean()


def vae(reconstruction: Tensor, target: Tensor, mu: Tensor, logvar: Tensor, beta: float = 1.0) -> Tensor:
    """Negative ELBO of a VAE (Kingma & Welling 2014, arXiv 1312.6114) with a unit-variance Gaussian decoder, per
    pixel: (1/2 sum of squared errors + beta KL) / pixels per image, up to the constant log(2 pi) / 2. ``beta`` > 1
    is the beta-VAE (Higgins et al. 2017)."""
    pixels = target[0].numel()
    sse = (reconstruction.float() - target.float()).square().flatten(1).sum(dim=1).mean()
    return (0.5 * sse + beta * gaussian_kl(mu, logvar)) / pixels


def discriminator_bce(real_logits: Tensor, fake_logits: Tensor, real_target: float = 1.0) -> Tensor:
    """GAN discriminator (Goodfellow et al. 2014): binary cross-entropy of real -> 1 and fake -> 0, each averaged,
    summed: -log D(x) - log(1 - D(G(z))). ``real_target`` < 1: one-sided label smoothing (Salimans et al. 2016)."""
    real, fake = real_logits.float(), fake_logits.float()
    return F.binary_cross_entropy_with_logits(
        real, torch.full_like(real, real_target)
    ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))


def generator_non_saturating(fake_logits: Tensor) -> Tensor:
    """The non-saturating generator loss -log D(G(z)) (Goodfellow et al. 2014, section 3; DCGAN's)."""
    fake = fake_logits.float()
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, N, patch_size^2 * C) patches in row-major order, each flattened (p, p, C) as in MAE."""
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: Tensor, patch_size: int, channels: int) -> Tensor:
    """The inverse of ``patchify`` for square images: (B, N, p^2 C) -> (B, C, H, W)."""
    b, n, _ = patches.shape
    grid = int(round(n**0.5))
    p = patch_size
    x = patches.reshape(b, grid, grid, p, p, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, channels, grid * p, grid * p)


def masked_patches(prediction: Tensor, target: Tensor, mask: Tensor, norm_pix: bool = True) -> Tensor:
    """MAE (He et al. 2022, arXiv 2111.06377): mean squared error over the masked patches only. prediction and
    target (B, N, P), mask (B, N) with 1 where masked; ``norm_pix``: each target patch standardised by its own mean
    and variance (eps 1e-6), MAE's better-representation target."""
    target = target.float()
    if norm_pix:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = (prediction.float() - target).square().mean(dim=-1)
    mask = mask.float()
    return (per_patch * mask).sum() / mask.sum()
