"""Two-player training (GAN, adversarial autoencoder) through Lightning's manual optimisation.

A method subclasses ``TwoPlayerMethod`` and names its ``players()``: two modules, each with its own
optimizer (``optim``'s settings) and warmup-cosine schedule; the first also trains the online probe. Each batch:
player one minimises ``ssl_step`` (its loss is the method's logged SSL loss), then player two minimises
``second_player_loss``; each step runs with the other player's parameters switched off (Lightning's
``toggled_optimizer``), under the run's precision (``manual_backward`` scales fp16 losses), with
``trainer.gradient_clip_val`` applied per optimizer. Lightning counts both steps in ``trainer.global_step``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from sslrun.methods.base import SSLMethod
from sslrun.optim import lightning_optimizers, param_groups


@contextmanager
def frozen_batchnorm_stats(module: nn.Module) -> Iterator[None]:
    """Batch norm still normalises by the batch's statistics but leaves its running ones as they are (momentum 0):
    a discriminator's running statistics then describe real images only, which is what evaluation feeds it."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum


class TwoPlayerMethod(SSLMethod):
    """An ``SSLMethod`` whose ``build`` makes two players; ``ssl_step`` is player one's loss, ``second_player_loss``
    player two's."""

    optimizer_steps_per_batch = 2  # Lightning counts both in trainer.global_step

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False

    def players(self) -> tuple[nn.Module, nn.Module]:
        raise NotImplementedError

    def second_player_loss(self, views: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def configure_optimizers(self):
        first, second = self.players()
        groups = (
            param_groups(first, self.run_config.optim) + self.probe_groups(),
            param_groups(second, self.run_config.optim),
        )
        batch = self.run_config.data.batch_size
        steps = self.optimizer_steps_per_batch
        return [
            lightning_optimizers(self.trainer, g, self.run_config.optim, batch, steps_per_batch=steps) for g in groups
        ]

    def player_step(self, optimizer: Any, loss: torch.Tensor) -> None:
        optimizer.zero_grad()
        self.manual_backward(loss)
        clip = self.run_config.trainer.gradient_clip_val
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        optimizer.step()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        views, labels = self.unpack(batch)
        first, second = self.optimizers()
        with self.toggled_optimizer(first):
            loss, feats = self.ssl_step(views)
            self.player_step(first, loss + self.probe_step(loss, feats, labels))
        with self.toggled_optimizer(second):
            second_loss = self.second_player_loss(views)
            self.player_step(second, second_loss)
        self.log("second_player_loss", second_loss, on_step=True, on_epoch=False)
        for schedule in self.lr_schedulers():
            schedule.step()
        return loss.detach()
