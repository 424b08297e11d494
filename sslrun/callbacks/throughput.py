"""Training throughput: source images per second (all ranks), measured from the end of one training batch to the
end of the next, so data loading and the optimizer step count but epoch-end evaluation does not; the share of that
time spent before the step starts (loading, collating, moving and augmenting the batch); and the whole run's ETA."""

from __future__ import annotations

import time
from collections import deque

import pytorch_lightning as pl

from sslrun.optim import run_steps

ETA_WINDOW = 50  # optimizer steps the ETA's pace is measured over: recent, so a change of load shows within minutes


class Throughput(pl.Callback):
    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self.data_seconds = 0.0
        self._waited = 0.0
        self._last: float | None = None
        self._marks: deque[tuple[int, float]] = deque(maxlen=ETA_WINDOW + 1)  # (optimizer steps done, time)

    @property
    def img_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def data_share(self) -> float:
        """Fraction of step time spent waiting for the batch: loader, transfer and on-device views."""
        return self.data_seconds / self.seconds if self.seconds else 0.0

    def eta_seconds(self, trainer: pl.Trainer) -> float | None:
        """Seconds left in the whole run at the pace of the last ``ETA_WINDOW`` steps (their evaluations included)."""
        done, total = self._done(trainer), run_steps(trainer, self._per_batch(trainer))
        if not self._marks or total == float("inf") or done <= self._marks[0][0]:
            return None
        first_done, first_time = self._marks[0]
        return (time.perf_counter() - first_time) / (done - first_done) * max(0, total - done)

    @staticmethod
    def _per_batch(trainer: pl.Trainer) -> int:
        return getattr(trainer.lightning_module, "optimizer_steps_per_batch", 1)  # two-player methods step twice

    def _done(self, trainer: pl.Trainer) -> int:
        return trainer.global_step // self._per_batch(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._marks.clear()
        self._marks.append((self._done(trainer), time.perf_counter()))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._last is not None:
            self._waited = time.perf_counter() - self._last

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.images += _batch_size(batch) * trainer.world_size
            self.seconds += now - self._last
            self.data_seconds += self._waited
            pl_module.log("img_per_s", self.img_per_s, prog_bar=True, on_step=True, on_epoch=False)
        self._last = now
        if self._marks and self._done(trainer) > self._marks[-1][0]:
            self._marks.append((self._done(trainer), now))


def _batch_size(batch) -> int:
    return len(batch[-1])
