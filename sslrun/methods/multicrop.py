"""Multi-crop (Caron et al. 2020, SwAV section 3.2; used by DINO): two global views and ``local_crops`` smaller ones,
declared by a method that mixes ``MultiCrop`` into its class and ``MultiCropConfig`` into its config."""

from __future__ import annotations

from dataclasses import dataclass, field

from sslrun.config import NON_NEGATIVE, MethodConfig, checked
from sslrun.data.views import ViewSpec, multi_crop


@dataclass
class MultiCropConfig(MethodConfig):
    local_crops: int = checked(2, NON_NEGATIVE)
    global_crop_scale: list[float] = field(default_factory=lambda: [0.25, 1.0])
    local_crop_scale: list[float] = field(default_factory=lambda: [0.05, 0.25])


class MultiCrop:
    """``view_specs``: 2 global views (``global_crop_scale``) + ``local_crops`` local ones (``local_crop_scale``)."""

    @classmethod
    def view_specs(cls, method_cfg) -> tuple[ViewSpec, ...]:
        m = method_cfg
        return multi_crop(m.local_crops, tuple(m.global_crop_scale), tuple(m.local_crop_scale))
