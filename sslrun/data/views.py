"""Augmentation recipes as plain functions: torchvision.transforms.v2 pipelines on uint8 (C, H, W) tensors.

``simclr_view`` follows SimCLR (Chen et al. 2020, appendix A): random resized crop, horizontal flip, colour jitter
(0.8s, 0.8s, 0.8s, 0.2s) applied with probability ``jitter_p``, random grayscale, optional Gaussian blur. The crop
runs on uint8 (torchvision's native uint8 resize is the cheap CPU path) and yields a small image; the colour ops after
it run on float, which skips their uint8 round trips (about 15% faster per view at 32 px).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torchvision.transforms import v2

from sslrun.config import ViewsConfig

Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ViewSpec:
    """One view a method asks for, relative to the data's recipe (``data.views``).

    ``size``: a fraction of ``data.image_size`` (multi-crop's local crops are smaller). ``scale``: the crop's area
    range; None: (``data.views.crop_min_scale``, 1). ``blur_p``: None is the recipe's; a value (BYOL's asymmetric
    1.0 / 0.1) applies only where the recipe blurs at all: the small-image recipe does not (a blur wipes out a 32 px
    crop), as LightlySSL's CIFAR-10 benchmark also turns BYOL's blur off. ``solarize_p``: solarization (pixels
    >= 0.5 inverted) after the other steps. ``color``: False keeps only the crop and the flip (no jitter, grayscale,
    blur or solarization): the single view of reconstruction, generative and pretext methods, whose targets are the
    pixels themselves."""

    size: float = 1.0
    scale: tuple[float, float] | None = None
    blur_p: float | None = None
    solarize_p: float = 0.0
    color: bool = True

    def resolve(self, cfg: ViewsConfig, image_size: int) -> ResolvedView:
        size = image_size if self.size == 1.0 else max(8, round(image_size * self.size))
        scale = (cfg.crop_min_scale, 1.0) if self.scale is None else tuple(self.scale)
        if not self.color:
            return ResolvedView(size, scale, 0.0, 0.0, color=False)
        blur = cfg.blur_p if self.blur_p is None or cfg.blur_p == 0 else self.blur_p
        return ResolvedView(size, scale, blur, self.solarize_p)


@dataclass(frozen=True)
class ResolvedView:
    """A ``ViewSpec`` made concrete for one dataset: size in pixels, crop scale, blur and solarize probabilities,
    and whether the recipe's colour steps (jitter, grayscale) run."""

    size: int
    scale: tuple[float, float]
    blur_p: float
    solarize_p: float
    color: bool = True


TWO_VIEWS = (ViewSpec(), ViewSpec())
"""SimCLR, MoCo, SimSiam, Barlow Twins, VICReg, NNCLR: two views drawn from the same recipe."""


def single_view(scale: tuple[float, float] = (0.5, 1.0)) -> tuple[ViewSpec]:
    """One view, crop (area ``scale``) and flip only: autoencoders, VAE, GAN, rotation, jigsaw and MAE corrupt it
    themselves (noise, masks, rotations, shuffled tiles) on the device, inside the method."""
    return (ViewSpec(scale=tuple(scale), color=False),)


def multi_crop(
    local_crops: int,
    global_scale: tuple[float, float],
    local_scale: tuple[float, float],
    local_size: float = 96 / 224,
) -> tuple[ViewSpec, ...]:
    """SwAV/DINO's multi-crop (Caron et al. 2020): two global views and ``local_crops`` smaller ones, sized
    ``local_size`` x ``data.image_size`` (96/224 as at ImageNet scale), from smaller crops of the image."""
    local = ViewSpec(size=local_size, scale=tuple(local_scale))
    return (ViewSpec(scale=tuple(global_scale)),) * 2 + (local,) * local_crops


def _to_normalized_float(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def simclr_view(
    cfg: ViewsConfig,
    image_size: int,
    channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    spec: ViewSpec = ViewSpec(),
) -> v2.Compose:
    """One random SimCLR view: uint8 (C, H, W) of any size -> float (C, size, size), normalised; size, crop scale,
    blur and solarization as ``spec`` resolves them against the recipe (default: the recipe's view at image_size)."""
    view = spec.resolve(cfg, image_size)
    image_size = view.size
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(image_size, scale=view.scale, antialias=True),
        v2.ToDtype(torch.float32, scale=True),
    ]
    if cfg.flip_p > 0:
        steps.append(v2.RandomHorizontalFlip(cfg.flip_p))
    s = cfg.jitter_strength
    if view.color and cfg.jitter_p > 0 and s > 0:
        # Saturation and hue are identities on one channel; leaving them out skips their cost.
        jitter = (
            v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s) if channels == 3 else v2.ColorJitter(0.8 * s, 0.8 * s)
        )
        steps.append(v2.RandomApply([jitter], p=cfg.jitter_p))
    if view.color and channels == 3 and cfg.grayscale_p > 0:
        steps.append(v2.RandomGrayscale(cfg.grayscale_p))
    if view.blur_p > 0:
        kernel = int(0.1 * image_size) // 2 * 2 + 1
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=view.blur_p))
    if view.solarize_p > 0:
        steps.append(v2.RandomSolarize(0.5, p=view.solarize_p))
    return v2.Compose([*steps, v2.Normalize(list(mean), list(std))])


def _apply_each(views: Sequence[Transform], image: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(view(image) for view in views)


def multi_views(
    cfg: ViewsConfig,
    image_size: int,
    channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    specs: Sequence[ViewSpec] = TWO_VIEWS,
) -> Callable[[torch.Tensor], tuple[torch.Tensor, ...]]:
    """uint8 (C, H, W) -> one independent view per spec, each float (C, size, size). Picklable."""
    return partial(_apply_each, [simclr_view(cfg, image_size, channels, mean, std, spec) for spec in specs])


def two_views(
    cfg: ViewsConfig, image_size: int, channels: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[[torch.Tensor], tuple[torch.Tensor, ...]]:
    """uint8 (C, H, W) -> two independent SimCLR views, each float (C, image_size, image_size). Picklable."""
    return multi_views(cfg, image_size, channels, mean, std, TWO_VIEWS)


def finetune_view(cfg: ViewsConfig, image_size: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Light augmentation for full fine-tuning: random resized crop with scale (0.5, 1) and the recipe's flip."""
    steps: list[v2.Transform] = [v2.RandomResizedCrop(image_size, scale=(0.5, 1.0), antialias=True)]
    if cfg.flip_p > 0:
        steps.append(v2.RandomHorizontalFlip(cfg.flip_p))
    return v2.Compose(steps + _to_normalized_float(mean, std))


def eval_transform(image_size: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Deterministic: resize the short side to ``image_size``, centre-crop a square, normalise."""
    return v2.Compose(
        [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size), *_to_normalized_float(mean, std)]
    )
