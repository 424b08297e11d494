"""Images a streamed dataset skipped because they failed to decode: said in the log at each epoch end when the count
grew, and returned for ``metrics.json`` (``unreadable_images``)."""

from __future__ import annotations

import logging

import pytorch_lightning as pl

log = logging.getLogger(__name__)


class UnreadableImages(pl.Callback):
    def __init__(self, data) -> None:
        self.data = data
        self.said = 0

    @property
    def count(self) -> int:
        return len(self.data.unreadable_images())

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        found = self.data.unreadable_images()
        if len(found) > self.said and trainer.is_global_zero:
            first = next(iter(found.items()))
            log.warning(
                "epoch %d: %d unreadable images skipped so far (another image took each one's place; first: %s, %s); "
                "pass data.strict=true to stop at the first instead",
                trainer.current_epoch,
                len(found),
                *first,
            )
        self.said = len(found)
