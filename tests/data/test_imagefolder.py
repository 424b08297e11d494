"""``imagefolder``: mixed PIL modes become 3-channel uint8 and grayscale trees 1-channel, unreadable files are skipped
with a count (or fail with strict), trees are decoded once into RAM when they fit, ``auto`` sizes and view recipes
resolve from the images, three layouts (train/val, class folders, unlabelled), and every layout mistake is a
ValueError that says what is missing."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from sslrun.config import DataConfig
from sslrun.data import DATASETS, SSLDataModule
from sslrun.data import imagefolder as imagefolder_module
from sslrun.data.base import TensorImages, square_image, unreadable_paths
from sslrun.data.imagefolder import auto_size


def cfg(root, **overrides) -> DataConfig:
    base = {"name": "imagefolder", "root": None if root is None else str(root), "batch_size": 2, "num_workers": 0}
    return OmegaConf.merge(OmegaConf.structured(DataConfig), {**base, "image_size": 16, **overrides})


def mixed_tree(root: Path) -> None:
    """train/a: L, RGB, RGBA, P and 16-bit PNGs plus a corrupt and a zero-byte PNG; train/b and val/{a,b}: RGB."""
    a = root / "train" / "a"
    a.mkdir(parents=True)
    Image.new("L", (10, 12), 40).save(a / "1_gray.png")
    Image.new("RGB", (10, 12), (10, 20, 30)).save(a / "2_rgb.png")
    Image.new("RGBA", (10, 12), (0, 0, 0, 0)).save(a / "3_rgba.png")
    palette = Image.new("P", (10, 12), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    palette.save(a / "4_palette.png")
    Image.fromarray(np.full((12, 10), 257 * 100, dtype=np.uint16)).save(a / "5_sixteen.png")
    (a / "0_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    (a / "6_empty.png").write_bytes(b"")
    (a / "notes.txt").write_text("not an image, ignored")
    for split, cls in (("train", "b"), ("val", "a"), ("val", "b")):
        (root / split / cls).mkdir(parents=True)
        Image.new("RGB", (14, 9), (1, 2, 3)).save(root / split / cls / "x.png")


def test_mixed_modes_load_as_rgb_and_unreadable_files_are_skipped(tmp_path, caplog):
    """Streamed: nothing is decoded up front; an unreadable file is replaced by the next one and recorded."""
    mixed_tree(tmp_path)
    splits = DATASETS.get("imagefolder")(cfg(tmp_path, cache="none"))
    assert splits.channels == 3 and splits.num_classes == 2 and len(splits.train) == 8 and len(splits.val) == 2
    assert not splits.in_memory
    items = {Path(path).stem: splits.train[i] for i, (path, _) in enumerate(splits.train.samples)}
    assert set(unreadable_paths(splits.train.unreadable_log)) == {
        str(tmp_path / "train" / "a" / n) for n in ("0_corrupt.png", "6_empty.png")
    }
    assert torch.equal(items["0_corrupt"][0], items["1_gray"][0])  # the next file took its place
    pixels = {stem: image for stem, (image, _) in items.items()}
    for image in pixels.values():
        assert image.dtype == torch.uint8 and image.shape[0] == 3
    assert pixels["1_gray"][:, 0, 0].tolist() == [40, 40, 40]
    assert pixels["2_rgb"][:, 0, 0].tolist() == [10, 20, 30]
    assert pixels["3_rgba"][:, 0, 0].tolist() == [255, 255, 255]  # transparent composited on white
    assert pixels["4_palette"][:, 0, 0].tolist() == [200, 100, 50]
    assert pixels["5_sixteen"][:, 0, 0].tolist() == [100, 100, 100]  # 16-bit scaled, not clipped
    assert pixels["5_sixteen"].shape == (3, 12, 10)
    with caplog.at_level(logging.WARNING):  # strict streaming decodes every file once, up front
        with pytest.raises(ValueError, match="cannot read .*0_corrupt.png"):
            DATASETS.get("imagefolder")(cfg(tmp_path, cache="none", strict=True))


def test_cached_tree_holds_the_same_pixels_decoded_once(tmp_path, caplog, monkeypatch):
    mixed_tree(tmp_path)
    decoded = []
    original = imagefolder_module.load_image
    monkeypatch.setattr(imagefolder_module, "load_image", lambda *a: decoded.append(a[0]) or original(*a))
    with caplog.at_level(logging.WARNING):
        splits = DATASETS.get("imagefolder")(cfg(tmp_path, cache="auto"))
    assert splits.in_memory and isinstance(splits.train, TensorImages) and splits.train.images.shape == (6, 3, 16, 16)
    assert sorted(decoded) == sorted(set(decoded)) and len(decoded) == 10  # each file tried once (2 fail)
    assert "skipped 2 unreadable images of 10 under" in " ".join(r.getMessage() for r in caplog.records)
    streamed = DATASETS.get("imagefolder")(cfg(tmp_path, cache="none"))
    bad = ("0_corrupt", "6_empty")
    readable = [i for i, (path, _) in enumerate(streamed.train.samples) if Path(path).stem not in bad]
    for i, j in enumerate(readable):
        assert torch.equal(splits.train[i][0], square_image(streamed.train[j][0], 16))
        assert splits.train[i][1] == streamed.train[j][1]


@pytest.mark.parametrize("cache", ["auto", "none"])
def test_mixed_tree_trains_through_the_datamodule(tmp_path, cache):
    mixed_tree(tmp_path)
    data = SSLDataModule(cfg(tmp_path, cache=cache), "pretrain")
    (view1, view2), labels = data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)
    assert data.batched is (cache == "auto")
    assert view1.shape == (2, 3, 16, 16) and not torch.equal(view1, view2)


def test_cache_auto_streams_a_tree_larger_than_the_cap(tmp_path):
    mixed_tree(tmp_path)
    assert not DATASETS.get("imagefolder")(cfg(tmp_path, cache_max_mb=0)).in_memory
    assert DATASETS.get("imagefolder")(cfg(tmp_path, cache="ram", cache_max_mb=0)).in_memory


def gray_tree(root: Path, sizes=(28, 28, 30, 60)) -> None:
    for split in ("train", "val"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i, size in enumerate(sizes):
                if i % 2:
                    pixels = np.full((size, size + 3), 257 * (10 + i), dtype=np.uint16)
                    Image.fromarray(pixels).save(root / split / label / f"{i}.png")
                else:
                    Image.new("L", (size + 3, size), 10 + i).save(root / split / label / f"{i}.png")


@pytest.mark.parametrize("cache", ["auto", "none"])
def test_grayscale_tree_stays_one_channel_and_resolves_its_size(tmp_path, cache):
    gray_tree(tmp_path)
    data = SSLDataModule(cfg(tmp_path, cache=cache, image_size="auto"), "pretrain")
    assert data.channels == 1 and data.image_size == 32  # median short side 29 -> 32 (the lower bound)
    assert data.cfg.image_size == 32 and data.cfg.views.recipe == "small" and data.cfg.views.blur_p == 0.0
    assert data.cfg.views.batched is (cache == "auto")
    image, _ = data.splits.train[1]
    assert image.shape[0] == 1 and int(image.flatten()[0]) == 11  # 16-bit 257 * 11 -> 11


def test_auto_size_is_the_median_short_side_within_bounds():
    assert auto_size([28, 28, 30, 60]) == 32
    assert auto_size([100, 90, 97]) == 96
    assert auto_size([500, 800, 1000]) == 224


def test_views_follow_the_resolution_and_keys_override_the_recipe(tmp_path):
    gray_tree(tmp_path, sizes=(120, 128, 130))
    data = SSLDataModule(cfg(tmp_path, image_size="auto", views={"crop_min_scale": 0.5}), "pretrain")
    assert data.image_size == 128 and data.cfg.views.recipe == "imagenet"
    assert data.cfg.views.blur_p == 0.5 and data.cfg.views.jitter_strength == 1.0
    assert data.cfg.views.crop_min_scale == 0.5


def class_tree(root: Path, per_class: int = 10) -> None:
    for label in ("ant", "bee", "cow"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (12, 12), (i, 0, 0)).save(root / label / f"{i}.png")


def test_class_folders_get_a_seeded_stratified_val_split(tmp_path):
    class_tree(tmp_path)
    first = DATASETS.get("imagefolder")(cfg(tmp_path, val_fraction=0.3))
    again = DATASETS.get("imagefolder")(cfg(tmp_path, val_fraction=0.3))
    assert first.num_classes == 3 and len(first.train) == 21 and len(first.val) == 9
    assert sorted(first.val.labels.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert torch.equal(first.val.images, again.val.images) and torch.equal(first.train.labels, again.train.labels)


@pytest.mark.parametrize("nested", [False, True])
def test_unlabelled_images_pretrain_without_labels(tmp_path, nested):
    for i in range(20):
        folder = tmp_path / f"day{i % 3}" / "cam" if nested else tmp_path
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (10, 10), (i, i, i)).save(folder / f"{i}.jpg")
    data = SSLDataModule(cfg(tmp_path, batch_size=4), "pretrain")
    assert data.num_classes == 0 and len(data.splits.train) == 16 and len(data.splits.val) == 4
    assert set(data.splits.train.labels.tolist()) == {-1}
    (view1, _), labels = data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)
    assert view1.shape[0] == 4 and labels.tolist() == [-1] * 4


@pytest.mark.parametrize(
    "layout, expected",
    [
        ("no_root", "needs data.root"),
        ("missing_root", "is not a directory"),
        ("no_train", "no images under"),
        ("no_classes", "no class folders"),
        ("no_val", "no 'val' folder"),
        ("empty_val", "no images in the class folders"),
        ("only_unreadable", "no readable val images"),
    ],
)
def test_layout_mistakes_say_what_is_missing(tmp_path, layout, expected):
    root = tmp_path / "tree"
    if layout not in ("no_root", "missing_root"):
        (root / "val" / "a").mkdir(parents=True)
    if layout in ("no_val", "empty_val", "only_unreadable"):
        (root / "train" / "a").mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(root / "train" / "a" / "x.png")
    if layout == "no_classes":
        (root / "train").mkdir()
        Image.new("RGB", (4, 4)).save(root / "train" / "x.png")
    if layout == "no_val":
        (root / "val" / "a").rmdir()
        (root / "val").rmdir()
    if layout == "only_unreadable":
        (root / "val" / "a" / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError) as err:
        DATASETS.get("imagefolder")(cfg(None if layout == "no_root" else root))
    message = str(err.value)
    assert expected in message and "ROOT/train/<class>" in message and "\n" not in message
    if layout != "no_root":
        assert str(root) in message


def test_degenerate_images_are_counted_and_named(tmp_path, caplog):
    """Once, a 1x1 image was accepted silently among 64 px ones."""
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (64, 64), (i, i, i)).save(tmp_path / split / "a" / f"{i}.png")
    Image.new("RGB", (1, 1)).save(tmp_path / "train" / "a" / "dot.png")
    Image.new("RGB", (64, 6)).save(tmp_path / "train" / "a" / "strip.png")
    with caplog.at_level(logging.WARNING):
        splits = DATASETS.get("imagefolder")(cfg(tmp_path))
    assert len(splits.train) == 6  # kept: the log says what to look at
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "2 degenerate image(s), short side under 8 px" in warning and "dot.png (1 px)" in warning
    assert "strip.png (6 px)" in warning and "0.png" not in warning
