"""Loss functions: pure, tensors in and a scalar out."""

from sslrun.losses.contrastive import NT_XENT_BACKENDS, info_nce, nt_xent, resolve_backend
from sslrun.losses.joint import (
    barlow_twins,
    byol,
    dino,
    moco,
    nearest_neighbour,
    negative_cosine,
    sinkhorn,
    swav,
    vicreg,
)
from sslrun.losses.reconstruction import (
    discriminator_bce,
    gaussian_kl,
    generator_non_saturating,
    masked_patches,
    patchify,
    reconstruction_mse,
    unpatchify,
    vae,
)

__all__ = [
    "NT_XENT_BACKENDS",
    "barlow_twins",
    "byol",
    "dino",
    "discriminator_bce",
    "gaussian_kl",
    "generator_non_saturating",
    "masked_patches",
    "patchify",
    "reconstruction_mse",
    "unpatchify",
    "vae",
    "info_nce",
    "moco",
    "nearest_neighbour",
    "negative_cosine",
    "nt_xent",
    "resolve_backend",
    "sinkhorn",
    "swav",
    "vicreg",
]
