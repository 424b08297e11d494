"""Training throughput: source images per second (all ranks), measured from the end of one training batch to the
end of the next, so data loading and the optimizer step count but epoch-end evaluation does not."""

from __future__ import annotations

import time

import pytorch_lightning as pl


class Throughput(pl.Callback):
    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self._last: float | None = None

    @property
    def img_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.images += _batch_size(batch) * trainer.world_size
            self.seconds += now - self._last
            pl_module.log("img_per_s", self.img_per_s, prog_bar=True, on_step=True, on_epoch=False)
        self._last = now


def _batch_size(batch) -> int:
    return len(batch[-1])
