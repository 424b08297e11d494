"""``imagefolder``: mixed PIL modes become 3-channel uint8, unreadable files are skipped (or fail with strict),
and every layout mistake is a UserError that says what is missing."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from sslrun.config import DataConfig
from sslrun.data import DATASETS, SSLDataModule
from sslrun.errors import UserError


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
    mixed_tree(tmp_path)
    with caplog.at_level(logging.WARNING):
        splits = DATASETS.get("imagefolder")(cfg(tmp_path))
    assert splits.channels == 3 and splits.num_classes == 2 and len(splits.train) == 6 and len(splits.val) == 2
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped 2 unreadable images of 8 under" in warning and "0_corrupt.png" in warning
    pixels = {Path(path).stem: splits.train[i][0] for i, (path, _) in enumerate(splits.train.samples)}
    for image in pixels.values():
        assert image.dtype == torch.uint8 and image.shape[0] == 3
    assert pixels["1_gray"][:, 0, 0].tolist() == [40, 40, 40]
    assert pixels["2_rgb"][:, 0, 0].tolist() == [10, 20, 30]
    assert pixels["3_rgba"][:, 0, 0].tolist() == [255, 255, 255]  # transparent composited on white
    assert pixels["4_palette"][:, 0, 0].tolist() == [200, 100, 50]
    assert pixels["5_sixteen"][:, 0, 0].tolist() == [100, 100, 100]  # 16-bit scaled, not clipped
    assert pixels["5_sixteen"].shape == (3, 12, 10)


def test_mixed_tree_trains_through_the_datamodule(tmp_path):
    mixed_tree(tmp_path)
    (view1, view2), labels = next(iter(SSLDataModule(cfg(tmp_path), "pretrain").train_dataloader()))
    assert view1.shape == (2, 3, 16, 16) and not torch.equal(view1, view2)


def test_strict_fails_on_the_first_unreadable_file(tmp_path):
    mixed_tree(tmp_path)
    with pytest.raises(UserError) as err:
        DATASETS.get("imagefolder")(cfg(tmp_path, strict=True))
    assert str(tmp_path / "train" / "a" / "0_corrupt.png") in str(err.value) and "data.strict=false" in str(err.value)


@pytest.mark.parametrize(
    "layout, expected",
    [
        ("no_root", "needs data.root"),
        ("missing_root", "is not a directory"),
        ("no_train", "no 'train' folder"),
        ("no_classes", "no class folders"),
        ("no_val", "no 'val' folder"),
        ("empty_val", "no images in the class folders"),
        ("only_unreadable", "no readable images"),
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
    with pytest.raises(UserError) as err:
        DATASETS.get("imagefolder")(cfg(None if layout == "no_root" else root))
    message = str(err.value)
    assert expected in message and "ROOT/train/<class>" in message and "\n" not in message
    if layout != "no_root":
        assert str(root) in message
