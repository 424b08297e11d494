"""SSL methods: one LightningModule per file, registered by name; ``Method.Config`` is its typed schema."""

from sslrun.registry import Registry

METHODS = Registry("method")

from sslrun.methods import (  # noqa: E402,F401  (registration side effects)
    adversarial_autoencoder,
    autoencoder,
    barlow_twins,
    byol,
    contrastive,
    dino,
    gan,
    jigsaw,
    mae,
    moco_v2,
    moco_v3,
    nnclr,
    rotation,
    simsiam,
    swav,
    vae,
    vicreg,
)

__all__ = ["METHODS"]
