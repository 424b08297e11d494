"""Data under DDP (2 gloo processes on CPU): in one epoch no training sample is seen twice, across ranks and loader
workers, and none is missing beyond the drop-last remainder, for a streamed image folder and for its WebDataset
shards; every rank gets the same number of batches; and the evaluation features each rank embeds for its share and
gathers equal one process's (in dataset order for the folder, as a set for the shards)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sslrun.shard import main as shard_main

WORKER = Path(__file__).parents[1] / "helpers" / "data_worker.py"
TRAIN, VAL, PER_RANK_BATCH = 47, 9, 4  # 47: uneven over 2 ranks, and 24 per rank fill 6 whole batches


def write_tree(root: Path) -> None:
    """train/cNN/0.png: one image per class, so a label names its sample; val/cNN/0.png for the first classes."""
    rng = np.random.default_rng(0)
    for split, classes in (("train", TRAIN), ("val", VAL)):
        for c in range(classes):
            (root / split / f"c{c:02d}").mkdir(parents=True)
            pixels = rng.integers(0, 256, (18, 18, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / f"c{c:02d}" / "0.png")


KINDS = {
    "folder": lambda root: ["name=imagefolder", f"root={root / 'tree'}", "cache=none", "num_workers=0"],
    "shards": lambda root: ["name=webdataset", f"root={root / 'shards'}", "num_workers=2"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[tuple[str, int], list[dict]]:
    root = tmp_path_factory.mktemp("ddp_data")
    write_tree(root / "tree")
    shard_main([str(root / "tree"), str(root / "shards"), "--max-count", "5"])
    found = {}
    for kind, overrides in KINDS.items():
        for devices in (1, 2):
            out = root / f"{kind}-{devices}.pt"
            cmd = [sys.executable, str(WORKER), "--devices", str(devices), "--out", str(out), *overrides(root)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=root)
            assert proc.returncode == 0, proc.stderr[-3000:]
            paths = [out] + [Path(f"{out}.rank{r}") for r in range(1, devices)]
            found[kind, devices] = [torch.load(p, weights_only=True) for p in paths]
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_an_epoch_sees_every_sample_once_across_ranks_and_workers(runs, kind):
    ranks = runs[kind, 2]
    seen = [label for rank in ranks for label in rank["seen"]]
    assert len(seen) == len(set(seen)), f"{kind}: a sample was seen twice in one epoch"
    assert set(seen) <= set(range(TRAIN))
    assert len({rank["batches"] for rank in ranks}) == 1, "ranks ran different numbers of batches"
    # the drop-last remainder: under a batch per rank (and, for shards, per loader worker)
    workers = 2 if kind == "shards" else 1
    assert TRAIN - len(seen) < 2 * workers * PER_RANK_BATCH
    single = runs[kind, 1][0]["seen"]
    assert len(single) == len(set(single)) and TRAIN - len(single) < workers * PER_RANK_BATCH


@pytest.mark.parametrize("kind", KINDS)
def test_gathered_evaluation_features_equal_one_process(runs, kind):
    single, ranks = runs[kind, 1][0], runs[kind, 2]
    for split in ("train", "val"):
        for rank in ranks:
            feats, labels = rank[split], rank[f"{split}_labels"]
            want_feats, want_labels = single[split], single[f"{split}_labels"]
            if kind == "shards":  # whole shards per rank: compare in label order
                feats, labels = feats[labels.argsort()], labels.sort().values
                want_feats, want_labels = want_feats[want_labels.argsort()], want_labels.sort().values
            assert torch.equal(labels, want_labels)
            torch.testing.assert_close(feats, want_feats, rtol=1e-5, atol=1e-6)
        assert len(labels) == (TRAIN if split == "train" else VAL)
