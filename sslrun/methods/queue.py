"""A first-in-first-out queue of embeddings (MoCo's negatives, NNCLR's support set, SwAV's score queue).

The queue is a persistent buffer, so it is saved in and restored from the checkpoint with the model (a resumed run
keeps its negatives). ``push`` takes the batch gathered from every rank: each rank holds the same queue, as a single
process with the global batch would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeatureQueue(nn.Module):
    """``size`` rows of ``dim`` features, initialised to random unit vectors; the oldest rows are overwritten."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be positive, got {size}")
        self.register_buffer("features", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.features.shape[0]

    @torch.no_grad()
    def push(self, rows: torch.Tensor) -> None:
        """Enqueue (n, dim) rows (the global batch); beyond ``size`` only the last ``size`` rows are kept."""
        rows = rows.detach()[-self.size :].to(self.features.dtype)
        index = (self.ptr + torch.arange(len(rows), device=rows.device)) % self.size
        self.features[index] = rows
        self.ptr.copy_((self.ptr + len(rows)) % self.size)
        self.count.add_(len(rows)).clamp_(max=self.size)

    def filled(self) -> torch.Tensor:
        """The rows written so far (all of them once the queue has wrapped)."""
        return self.features if int(self.count) >= self.size else self.features[: int(self.count)]
