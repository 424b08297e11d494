"""kNN monitor: each ``every_n_epochs`` epochs, embed the train split (the bank) and the validation split with the
frozen backbone, log the weighted-kNN top-1 and the online probe's top-1/top-5 on the validation split, and the
label-free RankMe of the validation features (the only signal when the data has no labels)."""

from __future__ import annotations

import logging

import pytorch_lightning as pl

from sslrun.callbacks.epochs import evaluation_due
from sslrun.callbacks.features import extract_features, knn_predict, rankme, topk_accuracy

log = logging.getLogger(__name__)


class KNNMonitor(pl.Callback):
    def __init__(self, k: int, temperature: float, every_n_epochs: int = 1, channels_last: bool = False) -> None:
        self.k = k
        self.temperature = temperature
        self.every_n_epochs = max(1, every_n_epochs)
        self.channels_last = channels_last
        self.best_knn_top1 = 0.0
        self._said_unlabelled = False

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not evaluation_due(trainer, self.every_n_epochs):
            return
        if pl_module.probe is None and not self._said_unlabelled:
            log.info(
                "no labels in data=%s: kNN and the online probe are skipped; logging rankme",
                trainer.datamodule.cfg.name,
            )
            self._said_unlabelled = True
        metrics = self.evaluate(trainer, pl_module)
        for name, value in metrics.items():
            pl_module.log(name, value, prog_bar=name == "knn_top1", sync_dist=True)

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        train_loader, val_loader = trainer.datamodule.eval_dataloaders()
        ctx = trainer.precision_plugin.forward_context
        args = (pl_module.device, ctx, self.channels_last)
        feats, labels = extract_features(pl_module.backbone, val_loader, *args)
        if pl_module.probe is None:
            return {"rankme": rankme(feats)}
        bank, bank_labels = extract_features(pl_module.backbone, train_loader, *args)
        num_classes = pl_module.probe.head.out_features
        known = bank_labels >= 0
        knn = knn_predict(bank[known], bank_labels[known], feats, num_classes, self.k, self.temperature)
        probe_scores = pl_module.probe(feats.to(pl_module.device)).float().cpu()
        top1 = topk_accuracy(knn, labels, 1)
        self.best_knn_top1 = max(self.best_knn_top1, top1)
        return {
            "knn_top1": top1,
            "knn_top1_best": self.best_knn_top1,
            "linear_top1": topk_accuracy(probe_scores, labels, 1),
            "linear_top5": topk_accuracy(probe_scores, labels, 5),
            "rankme": rankme(feats),
        }
