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

__all__ = [
    "NT_XENT_BACKENDS",
    "barlow_twins",
    "byol",
    "dino",
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
