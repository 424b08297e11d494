"""One epoch of a data module under N CPU processes (Lightning DDP, gloo) recording the sample identities each rank
trains on, then the evaluation features every rank gathers; tests/distributed/test_data_ddp.py checks them.

Every training sample's label is its identity (one image per class), so the labels seen are the samples seen."""

import argparse
import os

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from sslrun.config import DataConfig
from sslrun.data import SSLDataModule
from sslrun.eval.features import extract_features, gather_features
from sslrun.trainer import strategy_for

PER_RANK_BATCH = 4


class Recorder(pl.LightningModule):
    def __init__(self, channels: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = torch.nn.Sequential(
            torch.nn.Conv2d(channels, 8, 3, stride=2),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
        )
        self.backbone.requires_grad_(False)
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.seen: list[int] = []
        self.features: dict[str, torch.Tensor] = {}

    def training_step(self, batch, batch_idx):
        views, labels = batch
        self.seen += labels.tolist()
        return (self.scale * views[0].mean()) * 0.0

    def on_train_epoch_end(self) -> None:
        for name, loader in zip(("train", "val"), self.trainer.datamodule.eval_dataloaders(), strict=True):
            feats, labels = gather_features(*extract_features(self.backbone, loader, self.device))
            self.features[name], self.features[f"{name}_labels"] = feats, labels

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("overrides", nargs="+", help="data keys, e.g. name=imagefolder root=DIR")
    args = parser.parse_args()
    base = {"batch_size": PER_RANK_BATCH, "image_size": 16}
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), base, OmegaConf.from_dotlist(args.overrides))
    data = SSLDataModule(cfg, "pretrain")
    model = Recorder(data.channels)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy=strategy_for("ddp", args.devices, 1, False) if args.devices > 1 else "auto",
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    out = args.out if trainer.is_global_zero else f"{args.out}.rank{trainer.global_rank}"
    torch.save({"seen": model.seen, "batches": len(model.seen) // PER_RANK_BATCH, **model.features}, out)
    os.sync()


if __name__ == "__main__":
    main()
