"""The views a method asks for (``ViewSpec``: two symmetric, BYOL's asymmetric pair, multi-crop) made on the
per-image path and on the batched on-device path, and through the data module for every registered method."""

from dataclasses import replace

import pytest
import torch
from omegaconf import OmegaConf

from sslrun.config import DataConfig
from sslrun.data import SSLDataModule
from sslrun.data.batched_views import BatchedSimCLRViews, sample_view_params
from sslrun.data.recipes import RECIPES, recipe_views
from sslrun.data.views import TWO_VIEWS, ViewSpec, multi_crop, multi_views, single_view
from sslrun.methods import METHODS
from sslrun.methods.byol import BYOL_VIEWS

MEAN, STD = (0.5,), (0.25,)


def test_specs_resolve_against_the_recipe():
    small, imagenet = recipe_views("small"), recipe_views("imagenet")
    view = ViewSpec().resolve(small, 28)
    assert (view.size, view.scale, view.blur_p) == (28, (RECIPES["small"]["crop_min_scale"], 1.0), 0)
    assert view.solarize_p == 0
    # BYOL's asymmetric blur applies where the recipe blurs; the small-image recipe does not blur at all.
    assert [s.resolve(imagenet, 96).blur_p for s in BYOL_VIEWS] == [1.0, 0.1]
    assert [s.resolve(small, 28).blur_p for s in BYOL_VIEWS] == [0.0, 0.0]
    assert [s.resolve(small, 28).solarize_p for s in BYOL_VIEWS] == [0.0, 0.2]
    crops = [s.resolve(small, 28) for s in multi_crop(3, (0.3, 1.0), (0.05, 0.3))]
    assert [c.size for c in crops] == [28, 28, 12, 12, 12]
    assert [c.scale for c in crops] == [(0.3, 1.0)] * 2 + [(0.05, 0.3)] * 3


def test_per_image_views_follow_their_specs():
    specs = (ViewSpec(), ViewSpec(solarize_p=1.0, scale=(1.0, 1.0)), ViewSpec(size=0.5))
    cfg = recipe_views(jitter_p=0.0, grayscale_p=0.0, flip_p=0.0)
    image = torch.full((1, 20, 20), 204, dtype=torch.uint8)  # 0.8
    views = multi_views(cfg, 20, 1, MEAN, STD, specs)(image)
    assert [tuple(v.shape) for v in views] == [(1, 20, 20), (1, 20, 20), (1, 10, 10)]
    torch.testing.assert_close(views[0] * STD[0] + MEAN[0], torch.full((1, 20, 20), 0.8))
    torch.testing.assert_close(views[1] * STD[0] + MEAN[0], torch.full((1, 20, 20), 0.2))  # solarized: 1 - 0.8


def test_batched_views_follow_their_specs_and_keep_the_two_view_stream():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 24, 24), dtype=torch.uint8, generator=g)
    cfg = recipe_views(jitter_p=0.0, grayscale_p=0.0)
    two = BatchedSimCLRViews(cfg, 24, (0.5,) * 3, (0.25,) * 3)(images, torch.Generator().manual_seed(1))
    same = BatchedSimCLRViews(cfg, 24, (0.5,) * 3, (0.25,) * 3, TWO_VIEWS)(images, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(two, same, strict=True))
    specs = (ViewSpec(), ViewSpec(solarize_p=1.0), *multi_crop(2, (0.25, 1.0), (0.05, 0.25))[2:])
    views = BatchedSimCLRViews(cfg, 24, (0.5,) * 3, (0.25,) * 3, specs)(images, torch.Generator().manual_seed(1))
    assert [tuple(v.shape) for v in views] == [(6, 3, 24, 24)] * 2 + [(6, 3, 10, 10)] * 2
    params = sample_view_params(cfg, 6, 3, 24, 24, view=ViewSpec(solarize_p=1.0).resolve(cfg, 24))
    assert params.solarize is not None and bool(params.solarize.all())
    assert sample_view_params(cfg, 6, 3, 24, 24).solarize is None


def test_batched_solarize_inverts_bright_pixels():
    cfg = recipe_views(jitter_p=0.0, grayscale_p=0.0, flip_p=0.0, crop_min_scale=1.0)
    images = torch.tensor([51, 204], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 1, 8, 8).contiguous()
    (view,) = BatchedSimCLRViews(cfg, 8, (0.0,), (1.0,), (ViewSpec(solarize_p=1.0),))(images)
    torch.testing.assert_close(view[:, 0, 0, 0], torch.tensor([0.2, 0.2]))  # 0.2 stays, 0.8 -> 0.2


@pytest.mark.parametrize("batched", [False, True])
def test_the_single_view_keeps_the_pixels_colours(batched):
    """Reconstruction, generative and pretext methods get one view, crop and flip only: with the whole image kept
    and the flip forced, the view is the mirrored image, whatever jitter and grayscale the recipe would apply."""
    (spec,) = single_view(scale=(1.0, 1.0))
    resolved = spec.resolve(recipe_views(), 8)
    assert (resolved.color, resolved.blur_p, resolved.solarize_p) == (False, 0.0, 0.0)
    cfg = recipe_views("imagenet", jitter_p=1.0, grayscale_p=1.0, blur_p=1.0, flip_p=1.0)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=g)
    mean, std = (0.5,) * 3, (0.25,) * 3
    if batched:
        (view,) = BatchedSimCLRViews(cfg, 8, mean, std, (spec,))(images)
    else:
        view = torch.stack([multi_views(cfg, 8, 3, mean, std, (spec,))(image)[0] for image in images])
    torch.testing.assert_close(view * 0.25 + 0.5, images.flip(-1).float() / 255, atol=1e-6, rtol=0)


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_gets_its_views_from_the_data_module(name, batched):
    method = METHODS.get(name)
    specs = method.view_specs(OmegaConf.structured(method.Config(name=name)))
    cfg = DataConfig(name="digits", batch_size=8, num_workers=0, limit=32)
    cfg = replace(cfg, views=replace(cfg.views, batched=batched))
    data = SSLDataModule(OmegaConf.structured(cfg), stage="pretrain", views=specs)
    batch = next(iter(data.train_dataloader()))
    views, labels = data.augment_batch(batch) if batched else batch
    sizes = [spec.resolve(data.cfg.views, data.image_size).size for spec in specs]
    assert [tuple(v.shape) for v in views] == [(8, 1, s, s) for s in sizes]
    assert len(labels) == 8
