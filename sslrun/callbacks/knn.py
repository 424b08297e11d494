"""kNN monitor: each ``every_n_epochs`` epochs, embed the train split (the bank) and the validation split with the
frozen backbone, log the weighted-kNN top-1 and the online probe's top-1/top-5 on the validation split, and the
label-free RankMe of the validation features (the only signal when the data has no labels), with a warning when it
falls towards collapse. The best kNN top-1 and RankMe so far are kept in checkpoints."""

from __future__ import annotations

import logging

import pytorch_lightning as pl

from sslrun.callbacks.epochs import evaluation_due
from sslrun.eval.features import (
    extract_features,
    gather_features,
    knn_predict,
    precise_bn,
    rankme,
    topk_accuracy,
)

log = logging.getLogger(__name__)
COLLAPSED_RANK = 2.0  # RankMe at or below this: the embeddings span about one or two directions
COLLAPSE_DROP = 0.25  # or RankMe fell below this share of its best value in the run


def collapse_warning(value: float, best: float, max_rank: int) -> str | None:
    """The log line when RankMe ``value`` signals (dimensional) collapse, else None."""
    if value > COLLAPSED_RANK and value >= COLLAPSE_DROP * best:
        return None
    return (
        f"rankme is {value:.1f} (best {best:.1f} in this run, at most {max_rank}): the embeddings are collapsing "
        "onto a few directions; lower optim.lr or lengthen optim.warmup_epochs, or check the method's loss weights"
    )


class KNNMonitor(pl.Callback):
    def __init__(
        self,
        k: int,
        temperature: float,
        every_n_epochs: int = 1,
        channels_last: bool = False,
        precise: bool = False,
        initial: bool = False,
    ) -> None:
        self.k = k
        self.precise = precise  # eval.precise_bn: recompute batch-norm statistics before embedding
        self.temperature = temperature
        self.every_n_epochs = max(1, every_n_epochs)
        self.channels_last = channels_last
        self.best_knn_top1 = 0.0
        self.best_rankme = 0.0
        self.initial = initial  # eval.initial_knn: the kNN of the encoder the run starts from, at step 0
        self.initial_knn_top1: float | None = None
        self._max_rank = 0
        self._said_unlabelled = False

    def state_dict(self) -> dict[str, float | None]:
        return {
            "best_knn_top1": self.best_knn_top1,
            "best_rankme": self.best_rankme,
            "initial_knn_top1": self.initial_knn_top1,
        }

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.best_knn_top1 = state_dict["best_knn_top1"]
        self.best_rankme = state_dict["best_rankme"]
        self.initial_knn_top1 = state_dict.get("initial_knn_top1")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The kNN top-1 of the encoder before its first step (a random init, or ``backbone.weights``), on the same
        bank and queries as every later evaluation: what the end of the run is compared with. It leaves the run as
        it found it: the random states and the backbone's batch-norm statistics are put back."""
        if not self.initial or self.initial_knn_top1 is not None or pl_module.probe is None or trainer.global_step:
            return
        from sslrun.callbacks.checkpoints import rng_states, set_rng_states

        states = rng_states()
        buffers = {k: v.clone() for k, v in pl_module.backbone.state_dict().items()}
        try:
            feats, labels, bank, bank_labels = self._embed(trainer, pl_module)
            self.initial_knn_top1 = self._knn_top1(pl_module, feats, labels, bank, bank_labels)
        finally:
            pl_module.backbone.load_state_dict(buffers)
            set_rng_states(states)
        if trainer.is_global_zero:
            log.info(
                "kNN top-1 of the encoder before training: %.4f (the end of the run is compared with it)",
                self.initial_knn_top1,
            )

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
        warning = collapse_warning(metrics["rankme"], self.best_rankme, self._max_rank)
        if warning is not None and trainer.is_global_zero:
            log.warning(warning)
        for name, value in metrics.items():
            pl_module.log(name, value, prog_bar=name == "knn_top1", sync_dist=True)

    def _embed(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple:
        """(val features, val labels, bank features, bank labels); the bank (train split) only with labels."""
        train_loader, val_loader = trainer.datamodule.eval_dataloaders()
        ctx = trainer.precision_plugin.forward_context
        args = (pl_module.device, ctx, self.channels_last)
        if self.precise:
            precise_bn(pl_module.backbone, train_loader, *args)
        # under DDP each rank embeds its share of each split; every rank then holds all the features
        feats, labels = gather_features(*extract_features(pl_module.backbone, val_loader, *args))
        if pl_module.probe is None:
            return feats, labels, None, None
        return (feats, labels, *gather_features(*extract_features(pl_module.backbone, train_loader, *args)))

    def _knn_top1(self, pl_module: pl.LightningModule, feats, labels, bank, bank_labels) -> float:
        num_classes = pl_module.probe.head.out_features
        known = bank_labels >= 0
        knn = knn_predict(bank[known], bank_labels[known], feats, num_classes, self.k, self.temperature)
        return topk_accuracy(knn, labels, 1)

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        feats, labels, bank, bank_labels = self._embed(trainer, pl_module)
        rank = rankme(feats)
        self.best_rankme = max(self.best_rankme, rank)
        self._max_rank = min(feats.shape)
        if pl_module.probe is None:
            return {"rankme": rank}
        probe_scores = pl_module.probe(feats.to(pl_module.device)).float().cpu()
        top1 = self._knn_top1(pl_module, feats, labels, bank, bank_labels)
        self.best_knn_top1 = max(self.best_knn_top1, top1)
        return {
            "knn_top1": top1,
            "knn_top1_best": self.best_knn_top1,
            "linear_top1": topk_accuracy(probe_scores, labels, 1),
            "linear_top5": topk_accuracy(probe_scores, labels, 5),
            "rankme": rank,
        }
