"""trainer.strategy=fsdp on 2 CUDA GPUs: a ViT pretrains sharded block by block (with activation checkpointing), its
full checkpoint resumes and fine-tunes, and its loss after one step equals DDP's on the same global batch. Lightning's
FSDP refuses the CPU, so this is skipped without 2 GPUs (the CPU refusal is tested in tests/cli/test_cluster.py):

    pytest -m cuda tests/distributed/test_fsdp.py
"""

import json

import pytest
import torch

from helpers.cli import sslrun

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs (Lightning's FSDP refuses the CPU)"),
]

ARGS = ["backbone=vit_tiny", "backbone.width=0.5", "method=contrastive", "data.limit=256", "data.batch_size=32"]
ARGS += ["data.num_workers=0", "trainer=ddp", "trainer.devices=2", "trainer.max_steps=1", "trainer.precision=32"]
ARGS += ["optim=sgd", "optim.momentum=0", "optim.weight_decay=0", "trainer.deterministic=true"]


@pytest.mark.parametrize("checkpointing", [False, True])
def test_fsdp_trains_a_vit_like_ddp_and_its_checkpoint_is_a_full_one(tmp_path, checkpointing):
    runs = {}
    for strategy in ("ddp", "fsdp"):
        run = tmp_path / strategy
        extra = [f"trainer.activation_checkpointing={str(checkpointing).lower()}"] if strategy == "fsdp" else []
        proc = sslrun("pretrain", *ARGS, f"trainer.strategy={strategy}", *extra, f"hydra.run.dir={run}", cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        runs[strategy] = json.loads((run / "metrics.json").read_text())
    assert runs["fsdp"]["train_loss"] == pytest.approx(runs["ddp"]["train_loss"], rel=1e-4)
    state = torch.load(tmp_path / "fsdp" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert any(k.startswith("backbone.blocks.0.") for k in state["state_dict"])  # full, unsharded keys
    tune = sslrun("finetune", f"pretrained={tmp_path / 'fsdp'}", "mode=linear", "data.limit=256", "trainer=debug",
                  f"hydra.run.dir={tmp_path / 'tune'}", cwd=tmp_path)  # fmt: skip
    assert tune.returncode == 0, tune.stdout[-3000:] + tune.stderr[-3000:]
