"""``sslrun pretrain``: build data, backbone and method from the config and fit; write metrics.json."""

from __future__ import annotations

import time

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from sslrun import console, resume, trackers
from sslrun.callbacks.image_grid import ImageGrids
from sslrun.callbacks.knn import KNNMonitor
from sslrun.callbacks.throughput import Throughput
from sslrun.callbacks.unreadable import UnreadableImages
from sslrun.config import PretrainConfig
from sslrun.data import SSLDataModule
from sslrun.data.base import check_label_fraction
from sslrun.errors import UserError
from sslrun.eval.features import uses_precise_bn
from sslrun.methods import METHODS
from sslrun.optim import optim_schema
from sslrun.outputs import read_metrics, record_config, run_dir, write_metrics
from sslrun.trainer import build_trainer, compile_for_training


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
        cfg.eval.knn_k, cfg.eval.knn_temperature, cfg.eval.every_n_epochs, cfg.trainer.channels_last, precise
    )
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
    if trainer.is_global_zero:
        write_metrics(out, metrics)
        console.print_metrics(metrics, f"pretrain results ({out})")
        data = [console.override("data", cfg.data.name)] + (
            [console.override("data.root", cfg.data.root)] if cfg.data.root else []
        )
        finetune = console.command_line("sslrun", "finetune", console.override("pretrained", out), "mode=linear", *data)
        console.print_next([finetune, console.command_line("sslrun", "report", str(out))])
    return metrics


_REPORTED = ("knn_top1", "knn_top1_best", "linear_top1", "linear_top5", "rankme", "train_loss")
