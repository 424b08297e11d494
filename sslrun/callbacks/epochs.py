"""When the epoch-end callbacks (kNN monitor, image grids) run: every ``eval.every_n_epochs`` epochs, and always at
the run's last epoch (``max_epochs`` reached, or ``max_steps`` reached mid-schedule)."""

from __future__ import annotations

import pytorch_lightning as pl


def evaluation_due(trainer: pl.Trainer, every_n_epochs: int) -> bool:
    epochs_done = trainer.max_epochs is not None and 0 < trainer.max_epochs <= trainer.current_epoch + 1
    last = epochs_done or 0 < trainer.max_steps <= trainer.global_step
    return last or (trainer.current_epoch + 1) % every_n_epochs == 0
