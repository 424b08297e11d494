"""``sslrun pretrain``: build data, backbone and method from the config and fit; write metrics.json."""

from __future__ import annotations

import time

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from sslrun import console
from sslrun.callbacks.image_grid import ImageGrids
from sslrun.callbacks.knn import KNNMonitor
from sslrun.callbacks.throughput import Throughput
from sslrun.config import PretrainConfig
from sslrun.data import SSLDataModule
from sslrun.methods import METHODS
from sslrun.outputs import record_config, run_dir, write_metrics
from sslrun.trainer import build_trainer


def schema(cfg: DictConfig) -> PretrainConfig:
    return PretrainConfig(method=METHODS.get(str(OmegaConf.select(cfg, "method.name"))).Config())


def run(cfg: DictConfig) -> dict[str, float | int]:
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    method_cls = METHODS.get(cfg.method.name)
    data = SSLDataModule(cfg.data, stage="pretrain", views=method_cls.view_specs(cfg.method))
    cfg.data = data.cfg
    record_config(cfg, "pretrain")
    model = method_cls(OmegaConf.to_container(cfg, resolve=True), data.channels, data.image_size, data.num_classes)
    out = run_dir()
    throughput = Throughput()
    knn = KNNMonitor(cfg.eval.knn_k, cfg.eval.knn_temperature, cfg.eval.every_n_epochs, cfg.trainer.channels_last)
    grids = ImageGrids(out, cfg.eval.every_n_epochs)
    manual = not model.automatic_optimization
    trainer = build_trainer(cfg.trainer, cfg.logger, out, [throughput, knn, grids], manual_optimization=manual)
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in _REPORTED}
    metrics.update(
        img_per_s=throughput.img_per_s,
        data_wait_share=throughput.data_share,
        epochs=trainer.current_epoch,
        steps=trainer.global_step,
        seconds=time.perf_counter() - start,
    )
    if trainer.is_global_zero:
        write_metrics(out, metrics)
        console.print_metrics(metrics, f"pretrain results ({out})")
    return metrics


_REPORTED = ("knn_top1", "knn_top1_best", "linear_top1", "linear_top5", "rankme", "train_loss")
