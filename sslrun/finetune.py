"""``sslrun finetune``: evaluate a pretrained (or random-init) backbone with a linear probe on frozen features
plus kNN (``mode=linear``), or by full fine-tuning (``mode=full``); write top-1/top-5 to metrics.json. ``eval.layer``
picks the backbone stage evaluated (default: the last; the network is cut after that stage in both modes).
``data.label_fraction`` < 1 is low-shot evaluation: the probe, the fine-tune and the kNN bank see only a seeded
(``seed``), class-stratified subset of the train split (``SSLDataModule``); metrics.json records its size."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sslrun import console, resume, trackers
from sslrun.backbones import BACKBONES
from sslrun.backbones.layers import at_layer
from sslrun.backbones.library import describe
from sslrun.backbones.weights import start_backbone
from sslrun.checkpoint import load_pretrained
from sslrun.config import FinetuneConfig, backbone_config
from sslrun.data import SSLDataModule
from sslrun.eval.classifier import Classifier
from sslrun.eval.features import extract_features, knn_predict, precise_bn, topk_accuracy, uses_precise_bn
from sslrun.optim import optim_schema
from sslrun.outputs import read_metrics, record_config, run_dir, write_metrics
from sslrun.trainer import build_trainer, compile_for_training

log = logging.getLogger(__name__)


def schema(cfg: DictConfig) -> FinetuneConfig:
    return FinetuneConfig(optim=optim_schema(cfg))


def check(cfg: DictConfig) -> None:
    """Checks across keys, run before any work (``sslrun.app``)."""
    trackers.check(cfg.logger)


def build_backbone(cfg: DictConfig, data: SSLDataModule) -> tuple[nn.Module, DictConfig]:
    """The pretrained backbone (architecture from its checkpoint) or, for ``pretrained=none``, a random init."""
    if str(cfg.pretrained).lower() == "none":
        backbone_cfg = cfg.backbone
        return start_backbone(backbone_cfg, data.channels, data.image_size), backbone_cfg
    ckpt = load_pretrained(str(cfg.pretrained))
    pretrained_on = ckpt.config["data"]["name"]
    if ckpt.in_channels != data.channels:
        raise ValueError(
            f"{ckpt.path} was pretrained on data={pretrained_on} ({ckpt.in_channels}-channel images) but "
            f"data={cfg.data.name} has {data.channels}; pass data={pretrained_on} or another dataset with "
            f"{ckpt.in_channels} channels"
        )
    if pretrained_on != cfg.data.name:
        log.warning("evaluating a backbone pretrained on data=%s on data=%s (transfer)", pretrained_on, cfg.data.name)
    backbone_cfg = backbone_config(ckpt.config["backbone"])
    backbone = BACKBONES.build(backbone_cfg.name, backbone_cfg, ckpt.in_channels, ckpt.image_size)
    backbone.load_state_dict(ckpt.backbone_state)
    log.info("loaded backbone %s from %s", backbone_cfg.name, ckpt.path)
    return backbone, backbone_cfg


def run(cfg: DictConfig) -> dict[str, float | int | str]:
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    data = SSLDataModule(cfg.data, stage="finetune", seed=cfg.seed)
    cfg.data = data.cfg
    config = OmegaConf.to_container(cfg, resolve=True)
    out = run_dir()
    start_from = resume.resolve(cfg.resume, out, "finetune", config)
    record_config(cfg, "finetune", continuing=start_from is not None)
    if resume.announce(start_from, cfg.trainer):
        return read_metrics(out)
    evaluated = data.bound_evaluation(cfg.eval.max_train_images, cfg.eval.max_val_images)
    backbone, backbone_cfg = build_backbone(cfg, data)
    params = sum(p.numel() for p in backbone.parameters())
    backbone = at_layer(backbone, cfg.eval.layer)
    if cfg.trainer.compile:  # in place: the feature extraction (linear) or the fine-tune (full) runs compiled
        compile_for_training(nn.ModuleDict({"backbone": backbone}))
    metrics: dict[str, float | int | str] = {
        "mode": cfg.mode,
        "pretrained": str(cfg.pretrained),
        "layer": cfg.eval.layer,
        "label_fraction": float(cfg.data.label_fraction),
        "labelled_images": len(data.splits.train),  # the train images used: the data.label_fraction subset
    }
    if cfg.mode == "linear":
        model, train_loader, val_loader, knn_top1, calibrated = _linear_setup(cfg, backbone, data, backbone_cfg.name)
        metrics["knn_top1"] = knn_top1
        metrics["precise_bn_images"] = calibrated
        metrics.update(evaluated)
    else:
        model = Classifier(
            backbone, backbone.feature_dim, data.num_classes, cfg.optim, cfg.data.batch_size, cfg.trainer.channels_last
        )
        train_loader, val_loader = data.train_dataloader(), data.eval_dataloaders()[1]
    # The linear head on precomputed features costs nothing; it trains in fp32 whatever the preset says.
    linear = {"precision": "32", "channels_last": False}
    trainer_cfg = OmegaConf.merge(cfg.trainer, linear) if cfg.mode == "linear" else cfg.trainer
    trainer = build_trainer(
        trainer_cfg, cfg.logger, out, [], "finetune", config, validate=True, continuing=start_from is not None
    )
    trainer.fit(
        model, train_dataloaders=train_loader, val_dataloaders=val_loader, ckpt_path=start_from and start_from.path
    )
    metrics.update(top1=float(trainer.callback_metrics["top1"]), top5=float(trainer.callback_metrics["top5"]))
    metrics["unreadable_images"] = len(data.unreadable_images())
    metrics["backbone"] = describe(backbone_cfg)
    metrics["backbone_params"] = params
    if trainer.is_global_zero:
        write_metrics(out, metrics)
        console.print_metrics(metrics, f"finetune results ({out})")
        console.print_next([console.command_line("sslrun", "report", str(out))])
    return metrics


def _linear_setup(cfg: DictConfig, backbone: nn.Module, data: SSLDataModule, backbone_name: str):
    """Embed both splits once with the frozen backbone (plain eval transform); standardise with train statistics."""
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else "cpu")
    backbone.to(device)
    train_eval, val_eval = data.eval_dataloaders()
    calibrated = precise_bn(backbone, train_eval, device) if uses_precise_bn(cfg.eval.precise_bn, backbone_name) else 0
    if calibrated:
        log.info("eval.precise_bn: batch-norm statistics recomputed on %d train images", calibrated)
    train_x, train_y = extract_features(backbone, train_eval, device)
    val_x, val_y = extract_features(backbone, val_eval, device)
    knn = knn_predict(train_x, train_y, val_x, data.num_classes, cfg.eval.knn_k, cfg.eval.knn_temperature)
    # a floor relative to the features' own scale: a random-init library model can give features of 1e-10
    mean, std = train_x.mean(0), train_x.std(0)
    std = std.clamp_min(std.max().clamp_min(torch.finfo(std.dtype).tiny) * 1e-6)
    train_x, val_x = (train_x - mean) / std, (val_x - mean) / std
    model = Classifier(nn.Identity(), train_x.shape[1], data.num_classes, cfg.optim, cfg.data.batch_size)
    generator = torch.Generator().manual_seed(cfg.seed)
    train_loader = DataLoader(
        TensorDataset(train_x, train_y), batch_size=cfg.data.batch_size, shuffle=True, generator=generator
    )
    val_loader = DataLoader(TensorDataset(val_x, val_y), batch_size=1024)
    return model, train_loader, val_loader, topk_accuracy(knn, val_y, 1), calibrated
