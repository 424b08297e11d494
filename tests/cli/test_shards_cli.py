"""A streamed folder and its shards through the real CLI under ``trainer=ddp`` with 2 CPU processes: ``sslrun
shard`` writes the folder, a pretraining killed at an epoch end (both processes at once, as a preemption does) and
rerun by the same command ends as the uninterrupted run, and ``sslrun finetune`` reads the same data; shard urls that
match nothing are one line and exit status 2."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from helpers.cli import SSLRUN, assert_user_error, sslrun
from sslrun.callbacks.checkpoints import RUN_KEY
from sslrun.shard import main as shard_main

DDP = [
    "data.batch_size=4",
    "data.num_workers=1",
    "data.views.batched=true",  # views seeded by (seed, rank, step): the resumed epoch draws what the whole run drew
    "backbone=convnet",
    "backbone.width=0.25",
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.sync_batchnorm=false",
    "trainer.precision=32",
    "trainer.channels_last=false",
    "trainer.max_epochs=3",
    "trainer.checkpoint_every_n_minutes=null",
    "trainer.enable_progress_bar=false",
]


def write_tree(root: Path) -> None:
    from PIL import Image

    for c, cls in enumerate(("a", "b")):
        (root / cls).mkdir(parents=True)
        for i in range(25):
            Image.new("RGB", (20, 20), (9 * i, 100 * c, 50)).save(root / cls / f"{i}.png")


def data_args(kind: str, root: Path) -> list[str]:
    if kind == "folder":
        return ["data=imagefolder", f"data.root={root / 'tree'}", "data.cache=none"]
    return ["data=webdataset", f"data.root={root / 'shards'}"]


def start(run: Path, data: list[str]) -> subprocess.Popen:
    args = [SSLRUN, "pretrain", *DDP, *data, f"hydra.run.dir={run}"]
    # a session of its own: a kill reaches both processes, as a preemption does
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, (out + err)[-3000:]
    return out + err


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["folder", "shards"])
def test_streamed_data_pretrains_resumes_and_finetunes_under_ddp(tmp_path, kind):
    write_tree(tmp_path / "tree")
    if kind == "shards":
        shard_main([str(tmp_path / "tree"), str(tmp_path / "shards"), "--max-count", "5"])  # 8 train shards: 4 a rank
    data = data_args(kind, tmp_path)
    whole = tmp_path / "whole"
    finish(start(whole, data))
    expected = json.loads((whole / "metrics.json").read_text())
    assert expected["steps"] == 15 and expected["epochs"] == 3  # 20 samples per rank: 5 batches of 4 per epoch

    killed = tmp_path / "killed"
    proc = start(killed, data)
    checkpoint = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not checkpoint.is_file():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    info = torch.load(checkpoint, map_location="cpu", weights_only=True)[RUN_KEY]
    assert info["epochs_done"] == 1 and not info["mid_epoch"]
    log = finish(start(killed, data))
    assert "resuming from" in log
    resumed = json.loads((killed / "metrics.json").read_text())
    assert resumed["steps"] == expected["steps"]
    for key in ("train_loss", "knn_top1", "rankme"):
        assert resumed[key] == pytest.approx(expected[key], abs=1e-5), key

    tune = sslrun(
        "finetune", f"pretrained={killed}", "mode=linear", *data, "data.batch_size=8", "data.num_workers=0",
        "trainer=debug", f"hydra.run.dir={tmp_path / 'tune'}", cwd=tmp_path,
    )  # fmt: skip
    assert tune.returncode == 0, tune.stdout[-3000:] + tune.stderr[-3000:]
    assert json.loads((tmp_path / "tune" / "metrics.json").read_text())["top1"] >= 0


def test_shard_urls_that_match_nothing_are_one_line_and_exit_2(tmp_path):
    urls = str(tmp_path / "train-{000000..000003}.tar")
    proc = sslrun("pretrain", "data=webdataset", f"data.urls='{urls}'", cwd=tmp_path)
    assert_user_error(proc, "matches no file", "train-000000.tar does not exist")
