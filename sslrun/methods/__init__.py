"""SSL methods: one LightningModule per file, registered by name; ``Method.Config`` is its typed schema."""

from sslrun.registry import Registry

METHODS = Registry("method")

from sslrun.methods import contrastive  # noqa: E402,F401  (registration side effects)

__all__ = ["METHODS"]
