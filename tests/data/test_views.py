"""Augmentation recipes: shapes, normalisation, the recipe's switches, and picklability for worker processes."""

import pickle

import torch

from sslrun.data.recipes import recipe_views
from sslrun.data.views import eval_transform, finetune_view, simclr_view, two_views

MEAN, STD = (0.2, 0.4, 0.6), (0.5, 0.25, 0.2)


def image(channels: int = 3, size: int = 32) -> torch.Tensor:
    return torch.randint(0, 256, (channels, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_eval_transform_resizes_and_normalises():
    x = image(size=8)
    out = eval_transform(32, MEAN, STD)(x)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    same = eval_transform(8, MEAN, STD)(x)
    expected = (x.float() / 255 - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    torch.testing.assert_close(same, expected)


def test_view_without_randomness_equals_the_eval_transform():
    still = recipe_views(crop_min_scale=1.0, flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    x = image()
    torch.testing.assert_close(simclr_view(still, 32, 3, MEAN, STD)(x), eval_transform(32, MEAN, STD)(x))


def test_grayscale_switch_makes_channels_equal():
    gray = recipe_views(crop_min_scale=1.0, flip_p=0.0, jitter_p=0.0, grayscale_p=1.0)
    out = simclr_view(gray, 32, 3, MEAN, STD)(image())
    pixels = out * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
    torch.testing.assert_close(pixels[0], pixels[1])
    torch.testing.assert_close(pixels[1], pixels[2])


def test_two_views_differ_and_work_for_one_channel_with_blur():
    cfg = recipe_views(crop_min_scale=0.08, blur_p=1.0, grayscale_p=1.0)
    torch.manual_seed(0)
    for channels, size in ((1, 32), (3, 96)):
        view1, view2 = pickle.loads(pickle.dumps(two_views(cfg, size, channels, MEAN[:channels], STD[:channels])))(
            image(channels, size)
        )
        assert view1.shape == view2.shape == (channels, size, size) and not torch.equal(view1, view2)


def test_finetune_view_is_random_but_gentle():
    torch.manual_seed(0)
    x = image()
    outs = torch.stack([finetune_view(recipe_views(), 24, MEAN, STD)(x) for _ in range(4)])
    assert outs.shape == (4, 3, 24, 24) and not torch.equal(outs[0], outs[1])
