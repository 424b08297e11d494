"""Run one optimizer step of a method on a fixed global batch with N CPU processes (Lightning DDP, gloo) and save
the resulting parameters and the loss; tests/test_ddp.py compares world size 1 against 2."""

import argparse

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from sslrun.config import validate
from sslrun.methods import METHODS
from sslrun.pretrain import schema

GLOBAL_BATCH = 16


class FixedViews(Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.v1 = torch.randn(GLOBAL_BATCH, 1, 8, 8, generator=g)
        self.v2 = self.v1 + 0.5 * torch.randn(GLOBAL_BATCH, 1, 8, 8, generator=g)
        self.y = torch.arange(GLOBAL_BATCH) % 10

    def __len__(self) -> int:
        return GLOBAL_BATCH

    def __getitem__(self, i: int):
        return (self.v1[i], self.v2[i]), self.y[i]


def without_batchnorm(module: torch.nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
            setattr(module, name, torch.nn.Identity())
        else:
            without_batchnorm(child)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", required=True)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--backend", default="naive")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    overrides = [
        f"method={args.method}",
        "backbone=convnet",
        "backbone.width=0.125",
        "optim=sgd",
        "optim.lr=0.5",
        "optim.scale_lr=false",
        "optim.weight_decay=0",
        "optim.momentum=0",
        f"data.batch_size={GLOBAL_BATCH // args.devices}",
    ]
    if args.method == "contrastive":
        overrides.append(f"method.loss_backend={args.backend}")
    with initialize_config_module("sslrun.configs", version_base="1.3"):
        cfg = compose("pretrain", overrides=overrides)
    cfg = OmegaConf.to_container(validate(cfg, schema(cfg)), resolve=True)
    pl.seed_everything(0, verbose=False)
    model = METHODS.get(args.method)(cfg, in_channels=1, image_size=8, num_classes=10)
    # SyncBatchNorm needs GPUs; without it per-rank batch statistics differ from the single-process ones by design,
    # so batch norm is taken out to compare the gather, the loss and the gradient reduction alone.
    without_batchnorm(model)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    losses = []

    class RecordLoss(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(trainer.strategy.reduce(outputs["loss"].detach(), reduce_op="mean").item())

    trainer = pl.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[RecordLoss()],
    )
    loader = DataLoader(FixedViews(), batch_size=GLOBAL_BATCH // args.devices, shuffle=False)
    trainer.fit(model, train_dataloaders=loader)
    if trainer.is_global_zero:
        params = {k: v.detach().clone() for k, v in model.state_dict().items()}
        torch.save({"loss": losses[0], "init": init, "params": params}, args.out)


if __name__ == "__main__":
    main()
