"""Loss functions: pure, tensors in and a scalar out."""

from sslrun.losses.contrastive import NT_XENT_BACKENDS, info_nce, nt_xent, resolve_backend

__all__ = ["NT_XENT_BACKENDS", "info_nce", "nt_xent", "resolve_backend"]
