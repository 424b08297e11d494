"""``sslrun pretrain``: build data, backbone and method from the config and fit; write metrics.json."""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from sslrun import console, method_needs, resume, trackers
from sslrun.callbacks.image_grid import ImageGrids
from sslrun.callbacks.knn import KNNMonitor
from sslrun.callbacks.throughput import Throughput
from sslrun.callbacks.unreadable import UnreadableImages
from sslrun.cluster import is_first_process
from sslrun.config import PretrainConfig
from sslrun.data import SSLDataModule
from sslrun.data.base import check_label_fraction
from sslrun.errors import UserError
from sslrun.eval.features import uses_precise_bn
from sslrun.methods import METHODS
from sslrun.optim import optim_schema
from sslrun.outputs import read_metrics, record_config, run_dir, write_metrics
from sslrun.trainer import build_trainer, compile_for_training

log = logging.getLogger(__name__)


def schema(cfg: DictConfig) -> PretrainConfig:
    method = METHODS.get(str(OmegaConf.select(cfg, "method.name"))).Config()
    return PretrainConfig(method=method, optim=optim_schema(cfg))


def check(cfg: DictConfig) -> None:
    """Checks across keys, run before any work (``sslrun.app``)."""
    method = METHODS.get(cfg.method.name)
    method.check_backbone(cfg.method.name, cfg.backbone.name)
    if method.optimizer_steps_per_batch > 1 and cfg.trainer.accumulate_grad_batches > 1:
        raise UserError(
            f"method={cfg.method.name} steps its two optimizers itself, so it cannot accumulate gradients: drop "
            "trainer.accumulate_grad_batches, or raise data.batch_size instead"
        )
    check_label_fraction(cfg.data, "pretrain")
    trackers.check(cfg.logger)
    check_fsdp(cfg)


VIT_BACKBONES = ("vit_tiny", "vit_small")


def check_fsdp(cfg: DictConfig) -> None:
    """``trainer.strategy=fsdp``: Lightning's FSDP runs on CUDA GPUs only; sslrun shards ViT blocks; EMA teachers,
    queues and two-player methods are not proven under sharded parameters, so they are refused."""
    if cfg.trainer.activation_checkpointing and cfg.trainer.strategy != "fsdp":
        raise UserError("trainer.activation_checkpointing=true works with trainer.strategy=fsdp")
    if cfg.trainer.strategy != "fsdp":
        return
    import torch

    if cfg.trainer.accelerator == "cpu" or (cfg.trainer.accelerator == "auto" and not torch.cuda.is_available()):
        raise UserError(
            "trainer.strategy=fsdp needs CUDA GPUs (Lightning's FSDP refuses the CPU); on CPUs use trainer=ddp "
            "trainer.accelerator=cpu"
        )
    vit = cfg.backbone.name in VIT_BACKBONES or (
        cfg.backbone.name == "timm" and str(cfg.backbone.model).startswith(("vit_", "deit", "eva"))
    )
    if not vit:
        raise UserError(
            f"trainer.strategy=fsdp shards ViT blocks (backbone=vit_tiny, vit_small or a timm ViT), not "
            f"backbone={cfg.backbone.name}; a model this size trains under trainer.strategy=ddp"
        )
    method = METHODS.get(cfg.method.name)
    if method.teachers or method.optimizer_steps_per_batch > 1 or cfg.method.name in QUEUE_METHODS:
        raise UserError(
            f"method={cfg.method.name} keeps an EMA teacher, a queue or two players, which sslrun has not proven "
            "under FSDP's sharded parameters: use trainer.strategy=ddp (or method=contrastive, mae, barlow_twins, "
            "vicreg, simsiam)"
        )


QUEUE_METHODS = ("moco_v2", "nnclr", "swav")


def run(cfg: DictConfig) -> dict[str, float | int]:
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    method_cls = METHODS.get(cfg.method.name)
    data = SSLDataModule(
        cfg.data, stage="pretrain", views=method_cls.view_specs(method_cls.typed_config(cfg.method)), seed=cfg.seed
    )
    cfg.data = data.cfg
    config = OmegaConf.to_container(cfg, resolve=True)
    out = run_dir()
    start_from = resume.resolve(cfg.resume, out, "pretrain", config, labelled=data.num_classes > 0)
    record_config(cfg, "pretrain", continuing=start_from is not None)
    if resume.announce(start_from, cfg.trainer):
        return read_metrics(out)
    evaluated = data.bound_evaluation(cfg.eval.max_train_images, cfg.eval.max_val_images)
    normalization = {"mean": list(data.splits.mean), "std": list(data.splits.std)}
    model = method_cls(config, data.channels, data.image_size, data.num_classes, normalization)
    if cfg.trainer.compile:
        compile_for_training(model)
    throughput = Throughput()
    precise = uses_precise_bn(cfg.eval.precise_bn, cfg.backbone.name)
    knn = KNNMonitor(
        cfg.eval.knn_k,
        cfg.eval.knn_temperature,
        cfg.eval.every_n_epochs,
        cfg.trainer.channels_last,
        precise,
        initial=cfg.eval.initial_knn,
    )
    warn_if_short(cfg, data)
    grids = ImageGrids(out, cfg.eval.every_n_epochs)
    unreadable = UnreadableImages(data)
    manual = not model.automatic_optimization
    callbacks = [throughput, knn, grids, unreadable]
    trainer = build_trainer(
        cfg.trainer, cfg.logger, out, callbacks, "pretrain", config, manual_optimization=manual,
        continuing=start_from is not None,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(model, datamodule=data, ckpt_path=start_from and start_from.path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in _REPORTED}
    metrics.update(
        img_per_s=throughput.img_per_s,
        data_wait_share=throughput.data_share,
        epochs=trainer.current_epoch,
        steps=trainer.global_step,
        seconds=time.perf_counter() - start,
        backbone_params=sum(p.numel() for p in model.backbone.parameters()),
        **evaluated,
        unreadable_images=unreadable.count,
    )
    if start_from is not None:
        metrics["resumed_from_step"] = start_from.step
    title = f"pretrain results ({out})"
    if knn.initial_knn_top1 is not None:
        metrics["knn_top1_initial"] = knn.initial_knn_top1
        if "knn_top1" in metrics and metrics["knn_top1"] <= knn.initial_knn_top1:
            verdict = (
                f"kNN top-1 {metrics['knn_top1']:.4f} is not above the {knn.initial_knn_top1:.4f} of the encoder this "
                f"run started from: at this budget method={cfg.method.name} gave no better features for kNN"
            )
            metrics["verdict"] = "kNN not above the starting encoder's"
            title = f"pretrain results ({out}): NOT better than the starting encoder on kNN"
            if trainer.is_global_zero:
                log.warning("%s; see docs/methods.md#how-long-each-method-needs", verdict)
    if trainer.is_global_zero:
        write_metrics(out, metrics)
        console.print_metrics(metrics, title)
        data = [console.override("data", cfg.data.name)] + (
            [console.override("data.root", cfg.data.root)] if cfg.data.root else []
        )
        finetune = console.command_line("sslrun", "finetune", console.override("pretrained", out), "mode=linear", *data)
        console.print_next([finetune, console.command_line("sslrun", "report", str(out))])
    return metrics


def run_epochs(cfg: DictConfig, train_images: int) -> float:
    """The passes over the data this run makes: ``trainer.max_epochs``, or fewer when ``trainer.max_steps`` ends it
    first (devices and nodes counted when they are numbers)."""
    devices = cfg.trainer.devices if isinstance(cfg.trainer.devices, int) else 1
    batch = cfg.data.batch_size * devices * cfg.trainer.num_nodes * cfg.trainer.accumulate_grad_batches
    epochs = float(cfg.trainer.max_epochs) if cfg.trainer.max_epochs and cfg.trainer.max_epochs > 0 else float("inf")
    if cfg.trainer.max_steps and cfg.trainer.max_steps > 0:
        epochs = min(epochs, cfg.trainer.max_steps * batch / max(1, train_images))
    return epochs


def warn_if_short(cfg: DictConfig, data: SSLDataModule) -> None:
    """One line at the start when the run is shorter than its method was measured to need (sslrun.method_needs)."""
    split = data.splits.pretrain if data.splits.pretrain is not None else data.splits.train
    try:
        images = len(split)
    except TypeError:
        return
    line = method_needs.warning(cfg.method.name, round(run_epochs(cfg, images), 1), images)
    if line and is_first_process():
        log.warning("%s", line)


_REPORTED = ("knn_top1", "knn_top1_best", "linear_top1", "linear_top5", "rankme", "train_loss")
