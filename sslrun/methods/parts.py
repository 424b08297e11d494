"""Free functions a method composes its step from: one backbone pass over several views, a gather across ranks with
gradients, per-sample randomness that does not depend on the world size, and multi-crop view lists.

Nothing here names a modality: a "view" is any batch tensor whose first dimension is the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_gather


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def backbone_views(backbone: nn.Module, views: Sequence[torch.Tensor]) -> torch.Tensor:
    """Features (sum of B_v, D) of every view in order, one backbone pass per run of same-shaped views (multi-crop
    has two sizes)."""
    out, start = [], 0
    while start < len(views):
        end = start + 1
        while end < len(views) and views[end].shape[1:] == views[start].shape[1:]:
            end += 1
        out.append(backbone(torch.cat(list(views[start:end]))))
        start = end
    return torch.cat(out)


def gather(x: torch.Tensor) -> torch.Tensor:
    """(n, ...) per rank -> (world_size * n, ...) in rank order, gradients flowing back to every rank (the backward
    sums the ranks' gradients, which DDP's gradient mean then divides back: a loss computed alike on every rank from
    gathered tensors gets exactly the single-process gradient). The identity in a single process."""
    if world()[1] == 1:
        return x
    return torch.cat(all_gather(x))


def draw(n: int, sample: Callable[[int, torch.Generator], Any], seed: int, step: int, device: torch.device) -> Any:
    """Per-sample randomness (noise, masks, permutations, latent codes) for this rank's ``n`` rows: ``sample(m,
    generator)`` draws m rows (a tensor or a tuple of tensors) for the whole global batch from a generator seeded by
    (seed, step), alike on every rank, and each rank keeps its block, so a run draws the same whatever its world
    size. Two calls with the same step draw the same numbers: draw everything a step needs at once."""
    rank, size = world()
    generator = torch.Generator(device).manual_seed(int(seed) * 1_000_003 + int(step))
    rows = sample(n * size, generator)
    block = slice(rank * n, (rank + 1) * n)
    return tuple(r[block] for r in rows) if isinstance(rows, tuple) else rows[block]
