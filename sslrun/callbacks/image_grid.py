"""Pictures people look at before they read a number: each evaluation epoch, the method's image grids (input /
reconstruction rows, samples) for a fixed batch of validation images are written to ``RUN/images/<name>_epochNNN.png``
and logged to TensorBoard when it is on. Methods without pictures return none (``SSLMethod.image_grids``)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torchvision.utils import make_grid, save_image

from sslrun.callbacks.epochs import evaluation_due

GRID_IMAGES = 8


class ImageGrids(pl.Callback):
    def __init__(self, out_dir: Path, every_n_epochs: int = 1) -> None:
        self.out_dir = Path(out_dir) / "images"
        self.every_n_epochs = max(1, every_n_epochs)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not evaluation_due(trainer, self.every_n_epochs) or not trainer.is_global_zero:
            return
        data = trainer.datamodule
        images = next(iter(data.eval_dataloaders()[1]))[0][:GRID_IMAGES]
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            grids = pl_module.image_grids(images.to(pl_module.device))
        pl_module.train(was_training)
        mean = torch.tensor(data.splits.mean).view(1, -1, 1, 1)
        std = torch.tensor(data.splits.std).view(1, -1, 1, 1)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, rows in grids.items():
            pixels = (rows.float().cpu() * std + mean).clamp(0, 1)
            grid = make_grid(pixels, nrow=len(images), padding=1, pad_value=1.0)
            path = self.out_dir / f"{name}_epoch{trainer.current_epoch + 1:03d}.png"
            save_image(grid, path)
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_image(name, grid, trainer.global_step)
