"""SimCLR views for a whole batch at once, with vectorised tensor ops on the batch's device (``data.views.batched``).

The fast path of ``sslrun.data.views.simclr_view``: the same recipe and parameter distributions, but the loader only
collates uint8 images and every view of a batch is made in a few batched ops. Sampling (``sample_view_params``) is
split from applying (``apply_view_params``, pure) so a test can replay the same parameters through torchvision's
per-sample functional ops. Crop and flip are one bilinear ``grid_sample`` whose sample points are clamped to the crop
box, which reproduces ``resized_crop(..., antialias=False)``; inputs already at ``image_size`` are only ever upscaled
by the crop, where antialiasing does nothing, so this matches the reference recipe too (up to its uint8 rounding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sslrun.config import ViewsConfig
from sslrun.data.views import TWO_VIEWS, ResolvedView, ViewSpec

RATIO = (3.0 / 4.0, 4.0 / 3.0)
CROP_ATTEMPTS = 10
SIGMA = (0.1, 2.0)
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)


@dataclass
class ViewParams:
    """Per-sample parameters of B views. Boxes are (top, left, height, width) in input pixels; ``factors`` holds the
    brightness, contrast, saturation and hue factors and ``order`` (a permutation of 0..3 per row) the order in which
    the jitter ops run, as in torchvision's ColorJitter."""

    boxes: torch.Tensor  # (B, 4) int64
    flip: torch.Tensor  # (B,) bool
    jitter: torch.Tensor  # (B,) bool
    factors: torch.Tensor  # (B, 4) float32
    order: torch.Tensor  # (B, 4) int64
    gray: torch.Tensor  # (B,) bool
    blur: torch.Tensor  # (B,) bool
    sigma: torch.Tensor  # (B,) float32
    solarize: torch.Tensor | None = None  # (B,) bool; None: no solarization


def blur_kernel_size(image_size: int) -> int:
    """Odd Gaussian kernel of about a tenth of the image, as in ``simclr_view``."""
    return int(0.1 * image_size) // 2 * 2 + 1


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(n, 4) int64 (top, left, h, w) boxes drawn as RandomResizedCrop draws them: up to 10 attempts of area fraction
    U(scale) and log-uniform aspect ratio in (3/4, 4/3), the first that fits wins, else the central fallback crop."""
    device = torch.device(device)
    fraction = _uniform(n * CROP_ATTEMPTS, *scale, generator, device).view(n, CROP_ATTEMPTS)
    log_ratio = _uniform(n * CROP_ATTEMPTS, math.log(RATIO[0]), math.log(RATIO[1]), generator, device)
    ratio = log_ratio.view(n, CROP_ATTEMPTS).exp()
    area = fraction * (height * width)
    w = (area * ratio).sqrt().round().long()
    h = (area / ratio).sqrt().round().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.int().argmax(dim=1, keepdim=True)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    top = (torch.rand(n, generator=generator, device=device) * (height - h + 1)).long()
    left = (torch.rand(n, generator=generator, device=device) * (width - w + 1)).long()
    in_ratio = width / height
    fallback_w = width if in_ratio <= RATIO[1] else round(height * RATIO[1])
    fallback_h = height if in_ratio >= RATIO[0] else round(width / RATIO[0])
    fallback = torch.tensor(
        [(height - fallback_h) // 2, (width - fallback_w) // 2, fallback_h, fallback_w], device=device
    )
    return torch.where(fits.any(dim=1, keepdim=True), torch.stack([top, left, h, w], dim=1), fallback)


def sample_view_params(
    cfg: ViewsConfig,
    n: int,
    channels: int,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    view: ResolvedView | None = None,
) -> ViewParams:
    """Parameters of n independent views of (channels, height, width) images; ops the recipe leaves out (grayscale
    and the colour ops on one channel, blur at blur_p=0, jitter at strength 0) are never switched on. ``view`` (a
    method's ``ViewSpec`` resolved) sets the crop scale, blur and solarization; None: the recipe's two-view values."""
    device = torch.device(device)
    scale = (cfg.crop_min_scale, 1.0) if view is None else view.scale
    blur_p = cfg.blur_p if view is None else view.blur_p
    color = view is None or view.color

    def coin(p: float) -> torch.Tensor:
        return torch.rand(n, generator=generator, device=device) < p

    s = cfg.jitter_strength
    ranges = [(max(0.0, 1 - 0.8 * s), 1 + 0.8 * s)] * 3 + [(-0.2 * s, 0.2 * s)]
    return ViewParams(
        boxes=sample_crop_boxes(n, height, width, scale, generator, device),
        flip=coin(cfg.flip_p),
        jitter=coin(cfg.jitter_p if s > 0 and color else 0.0),
        factors=torch.stack([_uniform(n, lo, hi, generator, device) for lo, hi in ranges], dim=1),
        order=torch.rand(n, 4, generator=generator, device=device).argsort(dim=1),
        gray=coin(cfg.grayscale_p if channels == 3 and color else 0.0),
        blur=coin(blur_p),
        sigma=_uniform(n, *SIGMA, generator, device),
        solarize=coin(view.solarize_p) if view is not None and view.solarize_p > 0 else None,
    )


def _sample_points(start: torch.Tensor, length: torch.Tensor, size: int, extent: int) -> torch.Tensor:
    """(B,) crop starts and lengths -> (B, size) normalised grid coordinates of bilinear resize sample points,
    clamped to the crop like ``F.interpolate(align_corners=False)`` clamps them to its input."""
    out = torch.arange(size, device=start.device, dtype=torch.float32) + 0.5
    pixel = start[:, None] + out * (length[:, None] / size) - 0.5
    pixel = torch.minimum(pixel.clamp_min(start[:, None]), (start + length - 1)[:, None])
    return (2 * pixel + 1) / extent - 1


def crop_and_flip(images: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """float (B, C, H, W) -> (B, C, size, size): each box resized bilinearly, then mirrored where ``flip``."""
    _, _, height, width = images.shape
    top, left, h, w = boxes.float().unbind(dim=1)
    xs = _sample_points(left, w, size, width)
    xs = torch.where(flip[:, None], xs.flip(1), xs)
    ys = _sample_points(top, h, size, height)
    grid = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> luma (B, 1, H, W) with torchvision's weights; one channel is returned as it is."""
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(dim=1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    factor = factor.view(-1, 1, 1, 1)
    return (factor * images + (1 - factor) * other).clamp(0, 1)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """RGB (B, 3, H, W) in [0, 1] -> hue rotated by ``shift`` (B,) turns; value and chroma are kept, as through HSV.

    Hue in sixths of a turn follows torchvision's RGB -> HSV (ties go to red, then green); the way back is the
    closed form channel = max - chroma * clamp(2 - |k - 2|, 0, 1) with k = (5, 3, 1) + hue, modulo 6. Masks are
    multiplied in rather than selected with ``torch.where``, which is several times slower on CPU."""
    r, g, b = images.unbind(dim=1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    chroma = maxc - torch.minimum(torch.minimum(r, g), b)
    safe = chroma.clamp_min(torch.finfo(images.dtype).tiny)  # chroma 0 means r = g = b: every numerator is 0 too
    is_r = maxc == r
    is_g = (maxc == g).logical_and_(~is_r)
    is_b = (is_r | is_g).logical_not_()
    hue = (g - b).div_(safe).mul_(is_r)
    hue += (b - r).div_(safe).add_(2.0).mul_(is_g)
    hue += (r - g).div_(safe).add_(4.0).mul_(is_b)
    hue = hue.add_(6.0 * shift.view(-1, 1, 1)).unsqueeze(1)
    k = (torch.tensor([5.0, 3.0, 1.0], device=images.device).view(1, 3, 1, 1) + hue).remainder_(6.0)
    ramp = k.sub_(2.0).abs_().neg_().add_(2.0).clamp_(0.0, 1.0)
    return maxc.unsqueeze(1) - chroma.unsqueeze(1) * ramp


def _jitter_op(op: int, images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    if op == BRIGHTNESS:
        return (images * factor.view(-1, 1, 1, 1)).clamp(0, 1)
    if op == CONTRAST:
        return _blend(images, grayscale(images.mean(dim=(2, 3), keepdim=True)), factor)
    if op == SATURATION:
        return _blend(images, grayscale(images), factor)
    return adjust_hue(images, factor)


def color_jitter(images: torch.Tensor, params: ViewParams) -> torch.Tensor:
    """float (B, C, H, W) -> jittered where ``params.jitter``, each sample's ops in its own order; one channel gets
    brightness and contrast only (saturation and hue are identities there)."""
    ops = range(4) if images.shape[1] == 3 else (BRIGHTNESS, CONTRAST)
    out = images.clone()
    for position in range(4):
        for op in ops:
            index = (params.jitter & (params.order[:, position] == op)).nonzero().squeeze(1)
            if len(index):
                out[index] = _jitter_op(op, out[index], params.factors[index, op])
    return out


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """float (B, C, H, W), sigma (B,) -> each image blurred by its own separable Gaussian, reflect-padded."""
    n, c, height, width = images.shape
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    x = torch.linspace(-lim, lim, kernel_size, device=images.device)
    kernel = torch.softmax(-((x / sigma[:, None]) ** 2), dim=1).repeat_interleave(c, dim=0)  # (n * c, k)
    pad = kernel_size // 2
    flat = F.pad(images, [pad] * 4, mode="reflect").reshape(1, n * c, height + 2 * pad, width + 2 * pad)
    flat = F.conv2d(flat, kernel.view(n * c, 1, 1, kernel_size), groups=n * c)
    flat = F.conv2d(flat, kernel.view(n * c, 1, kernel_size, 1), groups=n * c)
    return flat.view(n, c, height, width)


def apply_view_params(images: torch.Tensor, params: ViewParams, size: int, blur_kernel: int) -> torch.Tensor:
    """float (B, C, H, W) in [0, 1] -> views (B, C, size, size) in [0, 1], not normalised: crop + flip, colour
    jitter, grayscale, blur, in ``simclr_view``'s order."""
    out = color_jitter(crop_and_flip(images, params.boxes, params.flip, size), params)
    index = params.gray.nonzero().squeeze(1)
    if len(index):
        out[index] = grayscale(out[index]).expand(-1, out.shape[1], -1, -1)
    index = params.blur.nonzero().squeeze(1)
    if len(index):
        out[index] = gaussian_blur(out[index], params.sigma[index], blur_kernel)
    if params.solarize is not None:
        out = torch.where(params.solarize.view(-1, 1, 1, 1) & (out >= 0.5), 1.0 - out, out)
    return out


class BatchedSimCLRViews:
    """uint8 (B, C, H, W) -> one view per ``ViewSpec`` (default: two SimCLR views), each float (B, C, size, size),
    normalised, on the images' device. Equal specs are made together in one pass over a repeated batch. Randomness
    comes from ``generator`` (on that device) or else the global RNG."""

    def __init__(
        self,
        cfg: ViewsConfig,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        specs: Sequence[ViewSpec] = TWO_VIEWS,
    ) -> None:
        self.cfg = cfg
        self.image_size = image_size
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.specs = tuple(specs)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        n, c, height, width = images.shape
        pixels = images.float().div_(255)
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        out: list[torch.Tensor | None] = [None] * len(self.specs)
        for spec in dict.fromkeys(self.specs):  # distinct specs, in order of first use
            slots = [i for i, s in enumerate(self.specs) if s == spec]
            view = spec.resolve(self.cfg, self.image_size)
            params = sample_view_params(self.cfg, len(slots) * n, c, height, width, generator, images.device, view)
            made = apply_view_params(pixels.repeat(len(slots), 1, 1, 1), params, view.size, blur_kernel_size(view.size))
            for slot, chunk in zip(slots, made.sub_(mean).div_(std).chunk(len(slots)), strict=True):
                out[slot] = chunk
        return tuple(out)
