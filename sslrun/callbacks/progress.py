"""The training progress bar: Lightning's rich bar plus the share of step time spent waiting for data and the ETA
of the whole run (the epoch bar only shows the epoch's)."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar

from sslrun.callbacks.throughput import Throughput


class RunProgressBar(RichProgressBar):
    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        throughput = next((cb for cb in trainer.callbacks if isinstance(cb, Throughput)), None)
        if throughput is None or not trainer.training:
            return items
        if throughput.seconds:
            items["data"] = f"{throughput.data_share:.0%}"
        eta = throughput.eta_seconds(trainer)
        if eta is not None:
            items["run ETA"] = _clock(eta)
        return items


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
