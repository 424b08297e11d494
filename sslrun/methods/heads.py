"""Heads shared by the joint-embedding methods: projection and prediction MLPs, DINO's head, SwAV's prototypes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mlp(
    in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2, last_bn: bool = False, last_bias: bool = True
) -> nn.Sequential:
    """``layers`` Linear layers, Linear-BN-ReLU between them: (B, in_dim) -> (B, out_dim). ``last_bn`` ends in a
    BatchNorm1d without affine parameters (MoCo v3's projector, Barlow Twins/VICReg style standardised outputs)."""
    if layers < 1:
        raise ValueError(f"an MLP needs at least one layer, got {layers}")
    blocks: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers - 1):
        blocks += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
        dim = hidden_dim
    blocks.append(nn.Linear(dim, out_dim, bias=last_bias and not last_bn))
    if last_bn:
        blocks.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*blocks)


def projection_mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Linear-BN-ReLU-Linear, the SimCLR v2 / MoCo v2 projection head: (B, in_dim) -> (B, out_dim)."""
    return mlp(in_dim, hidden_dim, out_dim, layers=2)


class DINOHead(nn.Module):
    """DINO's head: a 3-layer MLP (GELU; BatchNorm after the hidden layers with ``use_bn``, DINO's
    ``use_bn_in_head``) to a bottleneck, L2-normalised, then a weight-normalised linear layer to ``out_dim`` logits
    whose norm is fixed at 1 (``norm_last_layer``): (B, in_dim) -> (B, out_dim)."""

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck_dim: int, out_dim: int, use_bn: bool = False) -> None:
        super().__init__()
        norm = (lambda: nn.BatchNorm1d(hidden_dim)) if use_bn else nn.Identity
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            norm(),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            norm(),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        # The direction of each output unit is learnt; its length stays 1 (weight normalisation with g fixed at 1).
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)
        nn.init.trunc_normal_(self.last_layer.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        return F.linear(x, F.normalize(self.last_layer.weight, dim=1))


class Prototypes(nn.Module):
    """SwAV's prototypes: K unit vectors; scores of L2-normalised embeddings (B, D) -> (B, K) cosine similarities."""

    def __init__(self, dim: int, count: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(F.normalize(torch.randn(count, dim), dim=1))

    @torch.no_grad()
    def normalize_(self) -> None:
        self.weight.copy_(F.normalize(self.weight, dim=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z, dim=1) @ self.weight.T
