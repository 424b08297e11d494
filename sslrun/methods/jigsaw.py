"""Jigsaw puzzles (Noroozi & Favaro 2016, arXiv 1603.09246): cut the image into a grid x grid of cells, take a tile
from each cell at a random offset (the gap between tiles hides edge continuity, a shortcut), shuffle the tiles by one
of a fixed set of permutations, and classify which. The tiles go through the backbone one by one (shared weights,
the "context-free network"); their features are concatenated in the shuffled order and a 2-layer MLP predicts the
permutation's index.

The permutation set is the paper's maximal-Hamming-distance set, built greedily (each added permutation has the
largest minimal Hamming distance to those already chosen), deterministic for a given (tiles, count), and stored in
the checkpoint as a buffer. ``grid``: auto is 3 (the paper's) from 24 px up, else 2; ``num_permutations``: the
paper's 100 (at most (grid^2)!, 24 for a 2 x 2 grid); ``tile_fraction``: tile side over cell side (64/75 in the
paper). Tiles keep their native size (7 px on a 28 px image): the backbone pools whatever size it gets.
One view, crop and flip only.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from sslrun.config import HALF_OPEN_UNIT, POSITIVE, POSITIVE_INT, MethodConfig, Rule, checked, or_auto
from sslrun.data.views import single_view
from sslrun.methods import METHODS
from sslrun.methods.base import Inputs, SSLMethod
from sslrun.methods.heads import mlp

log = logging.getLogger(__name__)
MIN_TILE, GRID_3_MIN_SIZE, MAX_ENUMERATED_TILES, SAMPLED_CANDIDATES = 3, 24, 9, 200_000
AT_LEAST_TWO = Rule(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 2, "an integer >= 2")


def hamming_permutations(tiles: int, count: int, seed: int = 0) -> torch.Tensor:
    """(count, tiles) int64 permutations of range(tiles) chosen greedily for maximal minimal Hamming distance:
    candidates are all permutations (up to 9 tiles; else 200k drawn at random) in a seeded random order; the first is
    taken, then repeatedly the candidate farthest (by its minimal distance) from the chosen set, first on ties."""
    g = torch.Generator().manual_seed(seed)
    if tiles <= MAX_ENUMERATED_TILES:
        candidates = torch.tensor(list(itertools.permutations(range(tiles))), dtype=torch.int8)
        candidates = candidates[torch.randperm(len(candidates), generator=g)]
    else:
        candidates = torch.rand(SAMPLED_CANDIDATES, tiles, generator=g).argsort(dim=1).to(torch.int8)
    if not 1 <= count <= len(candidates):
        raise ValueError(f"method.num_permutations={count} must be between 1 and {len(candidates)} for {tiles} tiles")
    chosen = [0]
    nearest = (candidates != candidates[0]).sum(dim=1)
    for _ in range(count - 1):
        pick = int(nearest.argmax())
        chosen.append(pick)
        nearest = torch.minimum(nearest, (candidates != candidates[pick]).sum(dim=1))
    return candidates[chosen].long()


def resolve_grid(value: Any, image_size: int) -> int:
    """Tiles per side: ``value`` (an integer >= 2, checked by the schema), or auto: 3 from 24 px, else 2."""
    grid = (3 if image_size >= GRID_3_MIN_SIZE else 2) if value == "auto" else value
    if image_size // grid < MIN_TILE:
        raise ValueError(
            f"method.grid={grid} cuts {image_size}-px images into cells under {MIN_TILE} px; lower method.grid"
        )
    return grid


def cut_tiles(images: torch.Tensor, grid: int, tile: int, offsets: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, grid^2, C, tile, tile): from cell (r, c) (row-major; cells of side H // grid from the top
    left) the tile at (row, col) offset ``offsets[b, r * grid + c]`` (B, grid^2, 2) within the cell."""
    b, c, h, _ = images.shape
    cell = h // grid
    corner = torch.arange(grid, device=images.device) * cell
    top = corner.repeat_interleave(grid)[None] + offsets[..., 0]  # (B, T)
    left = corner.repeat(grid)[None] + offsets[..., 1]
    steps = torch.arange(tile, device=images.device)
    rows = (top[..., None] + steps)[..., :, None]  # (B, T, tile, 1)
    cols = (left[..., None] + steps)[..., None, :]  # (B, T, 1, tile)
    batch = torch.arange(b, device=images.device).view(b, 1, 1, 1)
    return images.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 1, 4, 2, 3)


@METHODS.register("jigsaw")
class Jigsaw(SSLMethod):
    """jigsaw puzzles: classify the permutation of shuffled tiles"""

    views = single_view()

    def build(self, config: Jigsaw.Config, inputs: Inputs) -> None:
        image_size = inputs.shape[-1]
        self.grid = resolve_grid(config.grid, image_size)
        self.cell = image_size // self.grid
        self.tile = max(1, int(config.tile_fraction * self.cell))
        self.tile_size = self.tile if config.tile_size == "native" else int(config.tile_size)
        tiles = self.grid**2
        count = min(config.num_permutations, math.factorial(tiles))
        self.register_buffer("permutations", hamming_permutations(tiles, count))
        log.info(
            "jigsaw: %d x %d grid of %d-px cells, %d-px tiles (seen at %d px), %d permutations",
            self.grid,
            self.grid,
            self.cell,
            self.tile,
            self.tile_size,
            count,
        )
        self.classifier = mlp(tiles * self.backbone.feature_dim, config.proj_hidden_dim, count, layers=2)

    def puzzles(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, S, S) -> shuffled tiles (B, grid^2, C, tile, tile) and the (B,) permutation indices."""
        n, tiles, slack = len(images), self.grid**2, self.cell - self.tile + 1
        count = len(self.permutations)
        device = images.device
        labels, offsets = self.draw(
            n,
            lambda m, g: (
                torch.randint(count, (m,), generator=g, device=device),
                torch.randint(slack, (m, tiles, 2), generator=g, device=device),
            ),
        )
        cut = cut_tiles(images, self.grid, self.tile, offsets)
        if self.tile_size != self.tile:  # the backbone sees tiles at the scale it is evaluated at, not at 7 px
            flat = F.interpolate(cut.flatten(0, 1), size=self.tile_size, mode="bilinear", align_corners=False)
            cut = flat.view(n, tiles, *flat.shape[1:])
        order = self.permutations[labels]  # (B, T): position j shows tile order[j]
        return cut[torch.arange(n, device=device)[:, None], order], labels

    def ssl_step(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        images = views[0]
        shuffled, labels = self.puzzles(images)
        n, tiles = shuffled.shape[:2]
        tile_feats = self.backbone(shuffled.flatten(0, 1))
        logits = self.classifier(tile_feats.view(n, tiles * tile_feats.shape[1]))
        self.log("jigsaw_acc", (logits.argmax(1) == labels).float().mean(), on_step=True, on_epoch=False)
        with torch.no_grad():  # the online probe watches the whole image, as evaluation sees it
            feats = self.backbone(images)
        return F.cross_entropy(logits.float(), labels), feats

    @dataclass
    class Config(MethodConfig):
        proj_hidden_dim: int = checked(512, POSITIVE_INT)  # hidden width of the permutation classifier
        grid: Any = checked("auto", or_auto(AT_LEAST_TWO))
        num_permutations: int = checked(100, POSITIVE)
        tile_fraction: float = checked(0.85, HALF_OPEN_UNIT)
        # the side the tiles are resized to before the backbone (native: their own, 7 px on a 28 px image)
        tile_size: Any = checked(
            "native", Rule(lambda v: v == "native" or (isinstance(v, int) and v >= 1), "native or a size in px")
        )
