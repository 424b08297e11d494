"""Online linear probe (as solo-learn and LightlySSL run it): a linear classifier trained on detached features
alongside the SSL objective, so the encoder receives no label signal while the probe tracks its quality."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class OnlineLinearProbe(nn.Module):
    """Linear head on (B, D) detached features; rows labelled -1 (unlabelled data) are ignored."""

    def __init__(self, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats.detach().float())

    def loss(self, feats: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy and top-1 accuracy over the labelled rows (both 0 when no row has a label)."""
        logits = self(feats)
        known = labels >= 0
        if not known.any():
            return logits.sum() * 0.0, logits.new_zeros(())
        loss = F.cross_entropy(logits[known], labels[known])
        acc = (logits[known].argmax(1) == labels[known]).float().mean()
        return loss, acc
