"""WebDataset shards: ``sslrun shard`` writes a folder's images with an index (counts, classes, sizes), leaving out and
counting unreadable files and refusing a non-empty OUT; ``data=webdataset`` streams them split over ranks and
workers with no sample read twice and the same number of full batches on every rank, skips and counts a corrupt
member, and says in one line what is wrong with shards it cannot use."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader
from webdataset import TarWriter

from sslrun.config import DataConfig
from sslrun.data import DATASETS, SSLDataModule
from sslrun.data.base import unreadable_paths
from sslrun.data.shards import _plan_batches, scan
from sslrun.shard import main as shard_main


def cfg(**overrides) -> DataConfig:
    base = {"name": "webdataset", "batch_size": 4, "num_workers": 0, "image_size": 12}
    return OmegaConf.merge(OmegaConf.structured(DataConfig), {**base, **overrides})


def png(value: int, size: tuple[int, int] = (16, 12), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    pixels = np.full((size[1], size[0], 3), value % 256, dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def write_shards(directory: Path, name: str, counts: list[int], labels: bool = True, start: int = 0) -> list[str]:
    """Shards ``name``-000000.tar ... holding ``counts`` samples; sample i (global) has label i (its identity)."""
    directory.mkdir(parents=True, exist_ok=True)
    urls, i = [], start
    for n, count in enumerate(counts):
        url = str(directory / f"{name}-{n:06d}.tar")
        with TarWriter(url, encoder=False) as tar:
            for _ in range(count):
                sample = {"__key__": f"{i:09d}", "png": png(i)}
                if labels:
                    sample["cls"] = str(i).encode()
                tar.write(sample)
                i += 1
        urls.append(url)
    return urls


def pattern(directory: Path, name: str, n: int) -> str:
    return str(directory / f"{name}-{{000000..{n - 1:06d}}}.tar")


def tree(root: Path, per_class: int = 6) -> None:
    for c, cls in enumerate(("a", "b")):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.new("L" if c else "RGB", (20 + i, 18), 10 * i).save(root / cls / f"{i}.png")
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))


def test_shard_writes_the_folder_with_an_index_and_refuses_a_full_out(tmp_path, capsys):
    tree(tmp_path / "src")
    out = tmp_path / "out"
    shard_main([str(tmp_path / "src"), str(out), "--max-count", "3", "--resize", "16"])
    index = json.loads((out / "index.json").read_text())
    assert index["classes"] == ["a", "b"] and index["unreadable"] == 1 and index["channels"] == 3
    train, val = index["splits"]["train"], index["splits"]["val"]
    assert train["count"] + val["count"] == 12 and set(val["per_class"]) == {"a", "b"}
    assert all(s["count"] <= 3 for s in train["shards"]) and sum(s["count"] for s in train["shards"]) == train["count"]
    assert index["image_size"] == {"median_short_side": 16, "resized_to": 16}  # 18 px short sides resized to 16
    assert "left out 1 unreadable" in " ".join(capsys.readouterr().out.split())
    splits = DATASETS.get("webdataset")(cfg(root=str(out)))
    seen = [label for _, label in splits.train]
    expected = [0] * train["per_class"]["a"] + [1] * train["per_class"]["b"]
    assert sorted(seen) == expected and splits.num_classes == 2
    with pytest.raises(SystemExit) as stop:
        shard_main([str(tmp_path / "src"), str(out)])
    assert stop.value.code == 2 and "not empty" in " ".join(capsys.readouterr().err.split())
    shard_main([str(tmp_path / "src"), str(out), "--force", "--max-count", "100"])
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "train-000000.tar", "val-000000.tar"]


@pytest.mark.parametrize("counts", [[5, 3, 9, 1], [4, 4, 4, 4, 4], [17], [2, 0, 7]])
@pytest.mark.parametrize("unit", [1, 2, 4])
def test_the_batch_plan_gives_every_rank_the_same_whole_batches_within_its_shards(counts, unit):
    per_rank = [counts[r::2] for r in range(2)]
    plan = _plan_batches(per_rank, unit)
    assert len({sum(rank) for rank in plan}) == 1
    assert all(b * unit <= c for rank, cs in zip(plan, per_rank, strict=True) for b, c in zip(rank, cs, strict=True))
    assert sum(plan[0]) == min(sum(c // unit for c in cs) for cs in per_rank)


@pytest.mark.parametrize("workers", [0, 2])
def test_ranks_and_workers_read_disjoint_samples_in_equal_full_batches(tmp_path, workers):
    urls = write_shards(tmp_path, "train", [7, 5, 6, 4, 9])
    splits = DATASETS.get("webdataset")(cfg(urls=pattern(tmp_path, "train", 5), val_urls=urls[-1]))
    labels, batches = [], []
    for rank in range(2):
        stream = splits.train.replace(shuffle=True, drop_last=True, seed=3, epoch=1, rank=rank, world=2)
        stream.workers = workers
        loader = DataLoader(stream, batch_size=4, num_workers=workers, drop_last=True)
        got = [y for _, y in loader]
        assert all(len(y) == 4 for y in got) and len(got) == len(loader)
        batches.append(len(got))
        labels += torch.cat(got).tolist()
    assert batches[0] == batches[1] > 0
    assert len(labels) == len(set(labels))  # no sample twice in the epoch
    assert set(labels) <= set(range(31))
    again = splits.train.replace(shuffle=True, drop_last=True, seed=3, epoch=2, world=2)
    assert [y for _, y in again] != [y for _, y in splits.train.replace(shuffle=True, drop_last=True, seed=3, world=2)]


def test_a_corrupt_member_is_skipped_counted_and_its_place_filled(tmp_path):
    write_shards(tmp_path, "train", [4, 4])
    url = tmp_path / "bad-000000.tar"
    with TarWriter(str(url), encoder=False) as tar:
        tar.write({"__key__": "x0", "png": b"not a png", "cls": b"0"})
        for i in range(3):
            tar.write({"__key__": f"x{i + 1}", "png": png(i), "cls": b"1"})
    splits = DATASETS.get("webdataset")(
        cfg(urls=f"{tmp_path}/{{train-000000,bad-000000}}.tar", val_urls=str(tmp_path / "train-000001.tar"))
    )
    stream = splits.train.replace(drop_last=True, batch_size=4)
    assert len(stream) == 8 and len(list(stream)) == 8
    skipped = unreadable_paths(splits.train.unreadable_log)
    assert list(skipped) == [f"{url}:x0"]
    with pytest.raises(ValueError, match="cannot read"):
        list(splits.train.replace(strict=True))


def test_streamed_shards_train_and_evaluate_through_the_datamodule(tmp_path):
    write_shards(tmp_path, "train", [6, 6, 6])
    write_shards(tmp_path, "val", [5], start=18)
    data = SSLDataModule(cfg(urls=pattern(tmp_path, "train", 3), val_urls=pattern(tmp_path, "val", 1)), "pretrain")
    assert data.num_classes == 23 and data.image_size == 12
    (view1, view2), labels = next(iter(data.train_dataloader()))
    assert view1.shape == (4, 3, 12, 12) and not torch.equal(view1, view2)
    assert data.bound_evaluation(9, None) == {"eval_train_images": 9, "eval_val_images": 5}
    train, val = data.eval_dataloaders()
    assert sum(len(y) for _, y in train) == 9 and sorted(torch.cat([y for _, y in val]).tolist()) == list(range(18, 23))


def bad_tar(directory: Path) -> str:
    path = directory / "notatar-000000.tar"
    path.write_bytes(b"just some bytes, not a tar archive" * 40)
    return str(path)


def empty_shard(directory: Path) -> str:
    path = directory / "empty-000000.tar"
    with TarWriter(str(path), encoder=False):
        pass
    return str(path)


def half_labelled(directory: Path) -> str:
    write_shards(directory, "lab", [3])
    write_shards(directory, "unlab", [3], labels=False, start=3)
    return f"{directory}/{{lab,unlab}}-000000.tar"


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d: str(d / "none-{000000..000003}.tar"), "matches no file"),
        (bad_tar, "is not a readable tar file"),
        (empty_shard, "holds no images"),
        (half_labelled, "3 train samples have a .cls label and 3 have none"),
    ],
)
def test_unusable_shards_are_refused_with_what_is_wrong(tmp_path, make, expected):
    write_shards(tmp_path, "val", [4])
    with pytest.raises(ValueError, match=expected):
        DATASETS.get("webdataset")(cfg(urls=make(tmp_path), val_urls=str(tmp_path / "val-000000.tar")))


def test_a_root_without_an_index_says_how_to_make_one(tmp_path):
    write_shards(tmp_path, "train", [2])
    with pytest.raises(ValueError, match="no index.json in .* sslrun shard may not have finished"):
        DATASETS.get("webdataset")(cfg(root=str(tmp_path)))
    with pytest.raises(ValueError, match="needs shards"):
        DATASETS.get("webdataset")(cfg())


def test_a_scan_counts_images_and_reads_labels_without_an_index(tmp_path):
    urls = write_shards(tmp_path, "train", [3, 2])
    scanned = scan(urls, "train")
    assert [s.count for s in scanned.shards] == [3, 2] and scanned.labelled and scanned.num_classes == 5
