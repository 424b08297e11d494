"""Divergence guard: a non-finite loss stops the run before the optimizer applies it, so the last checkpoint is the
last good state; the run ends with one line naming the step and that checkpoint (``Diverged``, exit status 3)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch

from sslrun.errors import Diverged


class DivergenceGuard(pl.Callback):
    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = Path(checkpoint)

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        if trainer.world_size > 1:  # every rank stops together, or the others wait forever in the next all-reduce
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        kept = (
            f"the last good checkpoint is kept: {self.checkpoint}"
            if self.checkpoint.is_file()
            else "no checkpoint had been written yet"
        )
        raise Diverged(
            f"training diverged: the loss is {loss.detach().float().flatten()[0].item()} at step "
            f"{trainer.global_step} (epoch {trainer.current_epoch}); {kept}. Lower optim.lr (or set "
            "trainer.gradient_clip_val) and start again with resume=never in a new hydra.run.dir"
        )
