"""View recipes chosen by resolution, and the resolution of ``auto`` data settings into the values a run uses.

``small`` (below 96 px, e.g. 28-64 px images): SimCLR's CIFAR-10 recipe (appendix B.9, also LightlySSL's CIFAR-10
benchmark): crops down to 8% of the area, colour jitter s=0.5, no blur (at 32 px a blur wipes out the few pixels a
crop keeps). ``imagenet`` (96 px and up): SimCLR's ImageNet recipe, jitter s=1.0, blur p=0.5.
"""

from __future__ import annotations

import os

from omegaconf import DictConfig, OmegaConf

from sslrun.config import DataConfig, ViewsConfig

RECIPES: dict[str, dict[str, float]] = {
    "small": {
        "crop_min_scale": 0.08,
        "flip_p": 0.5,
        "jitter_p": 0.8,
        "jitter_strength": 0.5,
        "grayscale_p": 0.2,
        "blur_p": 0.0,
    },
    "imagenet": {
        "crop_min_scale": 0.08,
        "flip_p": 0.5,
        "jitter_p": 0.8,
        "jitter_strength": 1.0,
        "grayscale_p": 0.2,
        "blur_p": 0.5,
    },
}
IMAGENET_RECIPE_MIN_SIZE = 96


def recipe_for(name: str, image_size: int) -> str:
    if name == "auto":
        return "imagenet" if image_size >= IMAGENET_RECIPE_MIN_SIZE else "small"
    return name


def parse_image_size(value: object) -> int | None:
    """``data.image_size``: a positive int, or ``auto`` (None here: the dataset decides)."""
    if value == "auto":
        return None
    return value


def parse_batched(value: object) -> bool | None:
    if value == "auto":
        return None
    return value


def resolve_data(cfg: DictConfig, image_size: int, in_memory: bool) -> DictConfig:
    """A copy of the data config with ``image_size``, the recipe, every view value and ``batched`` resolved."""
    resolved = OmegaConf.merge(OmegaConf.structured(DataConfig), cfg)
    resolved.image_size = image_size
    views = resolved.views
    views.recipe = recipe_for(views.recipe, image_size)
    for key, value in RECIPES[views.recipe].items():
        if views[key] is None:
            views[key] = value
    batched = parse_batched(views.batched)
    views.batched = in_memory if batched is None else batched
    if resolved.num_workers == "auto":
        resolved.num_workers = 0 if in_memory else min(4, os.cpu_count() or 1)
    return resolved


def recipe_views(recipe: str = "small", **values: object) -> ViewsConfig:
    """A complete ``ViewsConfig``: the recipe's values, overridden by ``values``; per-image views by default."""
    return ViewsConfig(**{**RECIPES[recipe], "recipe": recipe, "batched": False, **values})
