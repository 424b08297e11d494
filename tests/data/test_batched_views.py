"""The batched view fast path (``data.views.batched``) against the per-sample torchvision reference: the same output
for the same parameters, the same parameter distributions, and the same batches through the data module and a fit."""

from dataclasses import replace
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from sslrun.config import DataConfig, ViewsConfig, validate
from sslrun.data import SSLDataModule
from sslrun.data.base import square_image
from sslrun.data.batched_views import (
    BatchedSimCLRViews,
    ViewParams,
    apply_view_params,
    blur_kernel_size,
    sample_crop_boxes,
    sample_view_params,
)
from sslrun.data.recipes import recipe_views
from sslrun.data.views import simclr_view
from sslrun.methods import METHODS
from sslrun.pretrain import schema

# fp32 results of different but equivalent formulas (grid_sample vs interpolate, separable vs 2-D blur, closed-form
# vs branchy HSV->RGB) on values in [0, 1].
ATOL = 2e-5
CONFIGS = Path(__file__).resolve().parents[2] / "sslrun" / "configs" / "data"
ALL_ON = recipe_views(crop_min_scale=0.08, flip_p=0.5, jitter_p=1.0, jitter_strength=1.0, grayscale_p=0.3, blur_p=0.5)
N = 4000


def reference(images: torch.Tensor, params: ViewParams, size: int, kernel: int) -> torch.Tensor:
    """float (B, C, H, W) -> (B, C, size, size), each sample through torchvision's functional ops one at a time."""
    jitter_ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    out = []
    for i, image in enumerate(images):
        top, left, height, width = params.boxes[i].tolist()
        x = TF.resized_crop(image, top, left, height, width, [size, size], antialias=False)
        if params.flip[i]:
            x = TF.horizontal_flip(x)
        if params.jitter[i]:
            for op in params.order[i].tolist():
                x = jitter_ops[op](x, params.factors[i, op].item())
        if params.gray[i]:
            x = TF.rgb_to_grayscale(x, num_output_channels=3)
        if params.blur[i]:
            sigma = params.sigma[i].item()
            x = TF.gaussian_blur(x, [kernel, kernel], [sigma, sigma])
        out.append(x)
    return torch.stack(out)


def pixels(n: int, channels: int, height: int, width: int) -> torch.Tensor:
    return torch.rand(n, channels, height, width, generator=torch.Generator().manual_seed(1))


def params_for(n: int, channels: int, height: int, width: int, **fields) -> ViewParams:
    params = sample_view_params(ALL_ON, n, channels, height, width, torch.Generator().manual_seed(0))
    return replace(params, **fields)


def only(n: int, flip: bool = False, jitter: bool = False, gray: bool = False, blur: bool = False) -> dict:
    return {
        name: torch.full((n,), on) for name, on in (("flip", flip), ("jitter", jitter), ("gray", gray), ("blur", blur))
    }


def neutral_except(n: int, op: int) -> dict:
    """Jitter with every factor neutral but ``op``'s, so that op alone changes the image."""
    params = params_for(n, 3, 8, 8)
    factors = torch.tensor([1.0, 1.0, 1.0, 0.0]).repeat(n, 1)
    factors[:, op] = params.factors[:, op]
    return {**only(n, jitter=True), "factors": factors}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    ("height", "width", "size"),
    [(32, 32, 32), (19, 27, 13), (9, 7, 21)],
    ids=["square-upscale", "odd-nonsquare-down-and-up", "odd-upscale"],
)
@pytest.mark.parametrize(
    "case",
    ["crop", "flip", "brightness", "contrast", "saturation", "hue", "jitter", "gray", "blur", "all"],
)
def test_same_params_give_the_reference_output(channels, height, width, size, case):
    n = 24
    fields = {
        "crop": only(n),
        "flip": only(n, flip=True),
        "jitter": only(n, jitter=True),
        "gray": only(n, gray=True),
        "blur": only(n, blur=True),
        "all": {},
    }
    for op, name in enumerate(("brightness", "contrast", "saturation", "hue")):
        fields[name] = neutral_except(n, op)
    if channels == 1 and case == "gray":
        pytest.skip("the recipe has no grayscale step for one channel")
    params = params_for(n, channels, height, width, **fields[case])
    if channels == 1:
        params = replace(params, gray=torch.zeros(n, dtype=torch.bool))
    images = pixels(n, channels, height, width)
    kernel = blur_kernel_size(size) + 2  # wider than the recipe's 3 px at 32 px, to see the per-sample sigma
    expected = reference(images, params, size, kernel)
    torch.testing.assert_close(apply_view_params(images, params, size, kernel), expected, atol=ATOL, rtol=0)


def test_the_module_replays_its_sampled_params_and_normalises():
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    mean, std = (0.2, 0.4, 0.6), (0.5, 0.25, 0.2)
    view1, view2 = BatchedSimCLRViews(ALL_ON, 32, mean, std)(images, torch.Generator().manual_seed(3))
    params = sample_view_params(ALL_ON, 12, 3, 32, 32, torch.Generator().manual_seed(3))
    expected = reference(images.float().div(255).repeat(2, 1, 1, 1), params, 32, blur_kernel_size(32))
    expected = TF.normalize(expected, list(mean), list(std))
    torch.testing.assert_close(torch.cat([view1, view2]), expected, atol=ATOL / min(std), rtol=0)


def reference_steps(cfg: ViewsConfig, size: int) -> dict[type, v2.Transform]:
    """The transforms of ``simclr_view`` by type, unwrapping its RandomApply steps."""
    steps = {}
    for step in simclr_view(cfg, size, 3, (0.5,) * 3, (0.2,) * 3).transforms:
        inner = step.transforms[0] if isinstance(step, v2.RandomApply) else step
        steps[type(inner)] = inner
    return steps


def test_parameter_ranges_match_the_reference_recipe():
    cfg = recipe_views(crop_min_scale=0.3, jitter_strength=0.7, blur_p=0.5)
    steps = reference_steps(cfg, 96)
    crop, jitter, blur = steps[v2.RandomResizedCrop], steps[v2.ColorJitter], steps[v2.GaussianBlur]
    assert crop.scale == (cfg.crop_min_scale, 1.0)
    assert tuple(blur.kernel_size) == (blur_kernel_size(96),) * 2
    params = sample_view_params(cfg, N, 3, 96, 96, torch.Generator().manual_seed(0))
    ranges = [jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue, blur.sigma]
    for values, (low, high) in zip([*params.factors.T, params.sigma], ranges, strict=True):
        assert low <= values.min() < low + 0.01 and high - 0.01 < values.max() <= high, (low, high)
    sides = params.boxes[:, 2:].double()
    area, ratio = sides.prod(dim=1) / 96**2, sides[:, 1] / sides[:, 0]
    assert crop.scale[0] - 0.02 <= area.min() < crop.scale[0] + 0.01 and area.max() <= 1.0
    assert crop.ratio[0] - 0.02 <= ratio.min() < crop.ratio[0] + 0.01
    assert crop.ratio[1] - 0.01 < ratio.max() <= crop.ratio[1] + 0.02


def ks_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    grid = torch.cat([a, b]).unique()
    cdf = [torch.searchsorted(x.sort().values, grid, right=True) / len(x) for x in (a.double(), b.double())]
    return (cdf[0] - cdf[1]).abs().max().item()


@pytest.mark.parametrize(("height", "width"), [(32, 32), (24, 40)])
def test_crop_boxes_are_distributed_as_random_resized_crop(height, width):
    torch.manual_seed(0)
    crop = v2.RandomResizedCrop(16, scale=(0.08, 1.0))
    image = torch.zeros(1, height, width)
    ref = torch.tensor([list(crop.make_params([image]).values()) for _ in range(N)])
    ours = sample_crop_boxes(N, height, width, (0.08, 1.0), torch.Generator().manual_seed(1))
    critical = 1.95 * (2 / N) ** 0.5  # KS test at the 0.1% level, fixed seeds
    for column in range(4):  # top, left, height, width
        assert ks_distance(ours[:, column], ref[:, column]) < critical, column


def test_crop_falls_back_to_the_reference_central_crop():
    torch.manual_seed(0)
    crop = v2.RandomResizedCrop(16, scale=(0.9, 1.0))
    for height, width in ((4, 64), (64, 4)):  # no box of 90% of the area has an aspect ratio in [3/4, 4/3]
        expected = list(crop.make_params([torch.zeros(1, height, width)]).values())
        boxes = sample_crop_boxes(8, height, width, (0.9, 1.0), torch.Generator().manual_seed(0))
        assert boxes.tolist() == [expected] * 8


def test_switches_fire_at_their_rates_and_jitter_orders_are_uniform():
    params = sample_view_params(ALL_ON, N, 3, 32, 32, torch.Generator().manual_seed(0))
    for rate, p in ((params.flip, 0.5), (params.gray, 0.3), (params.blur, 0.5)):
        assert abs(rate.sum().item() - N * p) < 4 * (N * p * (1 - p)) ** 0.5, p
    assert params.jitter.all()
    first = torch.bincount(params.order[:, 0], minlength=4)
    assert ((first - N / 4).abs() < 4 * (N * 3 / 16) ** 0.5).all(), first
    assert (params.order.sort(dim=1).values == torch.arange(4)).all()
    off = sample_view_params(recipe_views(jitter_p=1.0, grayscale_p=1.0), N, 1, 32, 32)
    assert not off.gray.any() and not off.blur.any() and off.jitter.all()


def digits_module(batched: bool) -> SSLDataModule:
    views = OmegaConf.to_object(OmegaConf.load(CONFIGS / "digits.yaml").views)
    views.pop("recipe")  # digits.yaml sets every value; recipe_views starts from the small recipe
    cfg = DataConfig(
        name="digits", batch_size=16, num_workers=0, limit=48, views=replace(recipe_views(**views), batched=batched)
    )
    return SSLDataModule(cfg, stage="pretrain")


def test_batched_data_module_yields_the_reference_batches_after_transfer():
    reference_dm, batched_dm = digits_module(False), digits_module(True)
    torch.manual_seed(0)
    (ref1, ref2), ref_labels = reference_dm.on_after_batch_transfer(next(iter(reference_dm.train_dataloader())), 0)
    images, labels = next(iter(batched_dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (16, 1, 32, 32)
    (view1, view2), out_labels = batched_dm.on_after_batch_transfer((images, labels), 0)
    (later1, _), _ = batched_dm.on_after_batch_transfer((images, labels), 0)
    # outside a trainer: rank 0, step 0, so the views come from a generator seeded by the run's seed alone, the
    # same at every call (under a trainer the seed moves with rank and step, see test_resume)
    seeded = torch.Generator().manual_seed(batched_dm._seed)
    (again1, _), _ = batched_dm.augment_batch((images, labels), seeded)
    assert torch.equal(view1, later1)
    for ref, ours in ((ref1, view1), (ref2, view2)):
        assert ours.shape == ref.shape and ours.dtype == ref.dtype == torch.float32
    assert torch.equal(out_labels, labels) and out_labels.dtype == ref_labels.dtype
    assert torch.equal(view1, again1) and not torch.equal(view1, view2)
    # normalised like the reference: pixel statistics of both paths agree
    torch.testing.assert_close(view1.mean(), ref1.mean(), atol=0.25, rtol=0)


def test_loader_images_of_other_sizes_are_squared_once():
    tall = torch.randint(0, 256, (3, 40, 24), dtype=torch.uint8)
    assert square_image(tall, 16).shape == (3, 16, 16)
    assert torch.equal(square_image(tall[:, :16, :16], 16), tall[:, :16, :16])


class RecordBatches(pl.Callback):
    def __init__(self) -> None:
        self.batches = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.batches.append(batch)


def test_contrastive_fit_runs_through_the_batched_path():
    GlobalHydra.instance().clear()
    overrides = ["method=contrastive", "backbone=convnet", "backbone.width=0.25", "trainer=debug", "optim=sgd"]
    overrides += ["data=digits", "data.views.batched=true", "data.limit=64", "data.batch_size=16", "data.num_workers=0"]
    with initialize_config_module("sslrun.configs", version_base="1.3"):
        cfg = compose("pretrain", overrides=overrides)
    cfg = validate(cfg, schema(cfg))
    data = SSLDataModule(cfg.data, stage="pretrain")
    model = METHODS.get("contrastive")(OmegaConf.to_container(cfg, resolve=True), data.channels, data.image_size, 10)
    before = [p.detach().clone() for p in model.backbone.parameters()]
    record = RecordBatches()
    trainer = pl.Trainer(fast_dev_run=2, accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[record])
    trainer.fit(model, datamodule=data)
    assert len(record.batches) == 2
    for (view1, view2), labels in record.batches:
        assert view1.shape == view2.shape == (16, 1, 32, 32) and view1.dtype == torch.float32 and len(labels) == 16
    assert any(not torch.equal(a, b) for a, b in zip(before, model.backbone.parameters(), strict=True))


def test_batched_views_are_seeded_by_rank_and_step():
    """Same (rank, step): the same views, so a resumed run redraws them; another rank or step: other views."""
    from types import SimpleNamespace

    dm = digits_module(True)
    batch = next(iter(dm.train_dataloader()))

    def views(rank: int, step: int) -> torch.Tensor:
        dm.trainer = SimpleNamespace(global_rank=rank, global_step=step)
        return dm.on_after_batch_transfer(batch, 0)[0][0]

    first = views(0, 5)
    assert torch.equal(first, views(0, 5))
    assert not torch.equal(first, views(0, 6)) and not torch.equal(first, views(1, 5))
