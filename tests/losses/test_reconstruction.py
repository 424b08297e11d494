"""The reconstruction, generative and MAE losses against independent float64 versions: torch.distributions for the
VAE's KL (and a Monte-Carlo estimate), explicit log-sigmoids for the GAN losses, loops over patches for MAE."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from sslrun.losses import (
    discriminator_bce,
    gaussian_kl,
    generator_non_saturating,
    masked_patches,
    patchify,
    reconstruction_mse,
    unpatchify,
    vae,
)


def test_gaussian_kl_matches_the_distributions_and_a_monte_carlo_estimate():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g).double()
    q, p = Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros_like(mu), torch.ones_like(mu))
    exact = kl_divergence(q, p).sum(dim=1).mean()
    assert gaussian_kl(mu, logvar).item() == pytest.approx(exact.item(), rel=1e-6)
    z = q.sample((200_000,))
    monte_carlo = (q.log_prob(z) - p.log_prob(z)).sum(dim=-1).mean()
    assert gaussian_kl(mu, logvar).item() == pytest.approx(monte_carlo.item(), rel=0.02)
    # By hand: a unit posterior costs nothing; a mean of 1 in each of 3 dimensions costs 3 x 1/2.
    assert gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)).item() == 0.0
    assert gaussian_kl(torch.ones(2, 3), torch.zeros(2, 3)).item() == pytest.approx(1.5)


def test_vae_loss_is_half_the_squared_error_plus_beta_kl_per_pixel():
    x = torch.zeros(2, 1, 2, 2)
    recon = torch.full((2, 1, 2, 2), 2.0)  # squared error 4 per pixel, 16 per image
    mu, logvar = torch.ones(2, 3), torch.zeros(2, 3)  # KL 1.5 per image
    assert vae(recon, x, mu, logvar, beta=1.0).item() == pytest.approx((0.5 * 16 + 1.5) / 4)
    assert vae(recon, x, mu, logvar, beta=4.0).item() == pytest.approx((0.5 * 16 + 6.0) / 4)


def test_gan_losses_are_the_log_sigmoid_forms():
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(7, generator=g).double(), torch.randn(7, generator=g).double()

    def log_sigmoid(x):
        return torch.tensor([-math.log1p(math.exp(-v)) for v in x.tolist()], dtype=torch.float64)

    expected_d = -log_sigmoid(real).mean() - log_sigmoid(-fake).mean()  # -log D(x) - log(1 - D(G(z)))
    assert discriminator_bce(real, fake).item() == pytest.approx(expected_d.item(), rel=1e-6)
    assert generator_non_saturating(fake).item() == pytest.approx(-log_sigmoid(fake).mean().item(), rel=1e-6)
    # one-sided label smoothing: real -> 0.9 (-0.9 log D(x) - 0.1 log(1 - D(x))), fakes still -> 0
    smoothed = -(0.9 * log_sigmoid(real) + 0.1 * log_sigmoid(-real)).mean() - log_sigmoid(-fake).mean()
    assert discriminator_bce(real, fake, real_target=0.9).item() == pytest.approx(smoothed.item(), rel=1e-6)


def test_reconstruction_mse_is_the_mean_squared_error_and_checks_shapes():
    a, b = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    assert reconstruction_mse(a, b).item() == pytest.approx(((a - b) ** 2).mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="differ"):
        reconstruction_mse(a, b[:, :1])


def test_patchify_orders_patches_row_major_and_unpatchify_inverts_it():
    images = torch.randn(2, 3, 8, 8)
    patches = patchify(images, 4)
    assert patches.shape == (2, 4, 48)
    for index, (row, col) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        block = images[:, :, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4]  # (B, C, p, p) -> MAE's (p, p, C)
        torch.testing.assert_close(patches[:, index], block.permute(0, 2, 3, 1).reshape(2, 48))
    torch.testing.assert_close(unpatchify(patches, 4, 3), images)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_masked_patches_averages_hidden_patches_only(norm_pix):
    g = torch.Generator().manual_seed(2)
    prediction, target = torch.randn(3, 5, 6, generator=g).double(), torch.randn(3, 5, 6, generator=g).double()
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 1], [1, 1, 1, 0, 0]])
    errors = []
    for b in range(3):
        for n in range(5):
            if mask[b, n]:
                t = target[b, n]
                if norm_pix:
                    t = (t - t.mean()) / math.sqrt(t.var().item() + 1e-6)
                errors.append(((prediction[b, n] - t) ** 2).mean().item())
    expected = sum(errors) / len(errors)
    assert masked_patches(prediction, target, mask, norm_pix).item() == pytest.approx(expected, rel=1e-6)
