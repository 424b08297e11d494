"""SSL methods: one LightningModule per file, registered by name; ``Method.Config`` is its typed schema."""

from sslrun.registry import Registry

METHODS = Registry("method")

from sslrun.methods import (  # noqa: E402,F401  (registration side effects)
    barlow_twins,
    byol,
    contrastive,
    dino,
    moco_v2,
    moco_v3,
    nnclr,
    simsiam,
    swav,
    vicreg,
)

__all__ = ["METHODS"]
