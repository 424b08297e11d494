"""Vision Transformers (Dosovitskiy et al. 2021, arXiv 2010.11929) as MAE builds them (He et al. 2022, arXiv
2111.06377): patch embedding, a class token, fixed 2-D sine-cosine position embeddings, pre-norm blocks (PyTorch's
``TransformerEncoderLayer``, GELU, MLP ratio 4), a final LayerNorm. Features: the mean of the patch tokens after
the final norm (MAE's fine-tuning pool; the class token is kept for methods that want it).

``vit_tiny`` (192 wide, 3 heads) and ``vit_small`` (384, 6 heads), 12 blocks each; ``backbone.width`` scales the
embedding width (whole heads); ``backbone.patch_size`` auto: 4 below 96 px (a 32 px image is 8 x 8 patches), 16 from
96 px (224 px: 14 x 14). ``embed`` and ``encode`` are exposed for MAE, which encodes only the visible patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslrun.backbones import BACKBONES
from sslrun.config import BackboneConfig

SMALL_IMAGE_PATCH, LARGE_IMAGE_PATCH, LARGE_IMAGE_MIN_SIZE = 4, 16, 96


def sincos_2d(dim: int, grid: int) -> torch.Tensor:
    """(grid * grid, dim) fixed position embeddings: half the channels encode the row, half the column, each as
    sin/cos at frequencies 1 / 10000^(2i / (dim / 2)) (MAE's ``get_2d_sincos_pos_embed``)."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    parts = []
    for axis in (cols.flatten(), rows.flatten()):
        angle = axis[:, None] * omega[None, :]
        parts += [angle.sin(), angle.cos()]
    out = torch.cat(parts, dim=1)
    return nn.functional.pad(out, (0, dim - out.shape[1])).float()


def position_embeddings(dim: int, grid: int) -> torch.Tensor:
    """(1, 1 + grid^2, dim) fixed embeddings: zeros for the class token, then ``sincos_2d`` for the patches."""
    return torch.cat([torch.zeros(1, dim), sincos_2d(dim, grid)]).unsqueeze(0)


def transformer_block(dim: int, heads: int) -> nn.TransformerEncoderLayer:
    """One pre-norm transformer block, MLP ratio 4, GELU, no dropout (the encoder's and MAE's decoder's)."""
    return nn.TransformerEncoderLayer(
        dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )


def resolve_patch_size(value: object, image_size: int) -> int:
    if value == "auto":
        patch = LARGE_IMAGE_PATCH if image_size >= LARGE_IMAGE_MIN_SIZE else SMALL_IMAGE_PATCH
        return min(patch, image_size)
    return value


class ViT(nn.Module):
    """(B, C, H, W) -> (B, dim): mean of the normalised patch tokens."""

    def __init__(self, image_size: int, patch_size: int, in_channels: int, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        if image_size % patch_size:
            divisors = [p for p in range(2, image_size + 1) if image_size % p == 0 and p <= 32]
            raise ValueError(
                f"backbone.patch_size={patch_size} does not divide data.image_size={image_size}; "
                f"use one of: {', '.join(map(str, divisors))} (or change data.image_size)"
            )
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", position_embeddings(dim, self.grid), persistent=False)  # fixed
        self.blocks = nn.ModuleList(transformer_block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.depth = depth
        self.feature_dim = dim
        self.layer_dims = [dim] * 4
        self._init_weights()

    def _init_weights(self) -> None:
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.MultiheadAttention):
                nn.init.xavier_uniform_(m.in_proj_weight)
                nn.init.zeros_(m.in_proj_bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, dim) patch tokens with their position embeddings, N = (H / patch)(W / patch),
        row-major. Other input sizes than the configured one (multi-crop's local crops, jigsaw tiles) get the
        position grid resized bicubically, as DINO does, so a crop spans the positions of a whole image."""
        x = self.patch_embed(x)
        pos = self.pos_embed[:, 1:]
        if x.shape[-2:] != (self.grid, self.grid):
            square = pos.transpose(1, 2).reshape(1, -1, self.grid, self.grid)
            pos = F.interpolate(square, size=x.shape[-2:], mode="bicubic", align_corners=False).flatten(2)
            pos = pos.transpose(1, 2)
        return x.flatten(2).transpose(1, 2) + pos

    def encode(self, tokens: torch.Tensor, blocks: int | None = None) -> torch.Tensor:
        """(B, n, dim) patch tokens (all, or a subset) -> (B, 1 + n, dim) after the class token is prepended and the
        first ``blocks`` blocks run (all by default, then the final norm too)."""
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        h = torch.cat([cls, tokens], dim=1)
        for block in self.blocks[:blocks]:
            h = block(h)
        return self.norm(h) if blocks is None or blocks >= self.depth else h

    def forward_layer(self, x: torch.Tensor, depth: int) -> torch.Tensor:
        """Mean patch token after block group ``depth`` (1-4) of four equal groups; group 4 is ``forward``."""
        return self.encode(self.embed(x), blocks=self.depth * depth // 4)[:, 1:].mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_layer(x, 4)


def _builder(base_dim: int, heads: int, depth: int, doc: str):
    def build(cfg: BackboneConfig, in_channels: int, image_size: int) -> ViT:
        dim = max(1, round(base_dim * cfg.width / heads)) * heads
        return ViT(image_size, resolve_patch_size(cfg.patch_size, image_size), in_channels, dim, depth, heads)

    build.__doc__ = doc
    return build


BACKBONES.register("vit_tiny")(_builder(192, 3, 12, "ViT-Tiny (192 wide, 12 blocks, 3 heads; patch 4 below 96 px)"))
BACKBONES.register("vit_small")(_builder(384, 6, 12, "ViT-Small (384 wide, 12 blocks, 6 heads; patch 4 below 96 px)"))
