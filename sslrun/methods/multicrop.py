"""Multi-crop (Caron et al. 2020, SwAV section 3.2; used by DINO): two global views and ``local_crops`` smaller ones.
A method adds ``MultiCropConfig``'s keys to its config and returns ``multi_crop_views(config)`` from ``view_specs``."""

from __future__ import annotations

from dataclasses import dataclass, field

from sslrun.config import NON_NEGATIVE, MethodConfig, checked
from sslrun.data.views import ViewSpec, multi_crop


@dataclass
class MultiCropConfig(MethodConfig):
    local_crops: int = checked(2, NON_NEGATIVE)
    global_crop_scale: list[float] = field(default_factory=lambda: [0.25, 1.0])
    local_crop_scale: list[float] = field(default_factory=lambda: [0.05, 0.25])


def multi_crop_views(config: MultiCropConfig) -> tuple[ViewSpec, ...]:
    """2 global views (``global_crop_scale``) + ``local_crops`` local ones (``local_crop_scale``)."""
    return multi_crop(config.local_crops, tuple(config.global_crop_scale), tuple(config.local_crop_scale))
