"""Typed schemas for every config group, and the check that turns a composed Hydra config into a validated one.

YAML files under ``configs/`` carry values; these dataclasses carry types. A composed config is merged onto its
schema with struct mode on, so an unknown key or a value of the wrong type fails before any training starts.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from sslrun.errors import UserError

PRECISIONS = ("32", "64", "bf16-mixed", "16-mixed", "bf16-true", "16-true")


@dataclass
class ViewsConfig:
    """Two-view augmentation recipe (SimCLR); sizes follow ``data.image_size``. ``recipe`` (auto: ``small`` below
    96 px, ``imagenet`` from 96 px) fills every value left null; a value set here overrides the recipe's.
    ``batched`` (auto: when the dataset is held in memory) makes the views a batch at a time on the device."""

    recipe: str = "auto"
    crop_min_scale: float | None = None
    flip_p: float | None = None
    jitter_p: float | None = None
    jitter_strength: float | None = None
    grayscale_p: float | None = None
    blur_p: float | None = None
    batched: Any = "auto"


@dataclass
class DataConfig:
    name: str = MISSING
    root: str | None = None
    download: bool = True
    batch_size: int = 256
    num_workers: Any = "auto"
    image_size: Any = "auto"
    cache: str = "auto"
    cache_max_mb: int = 4096
    strict: bool = False
    limit: int | None = None
    val_fraction: float = 0.2
    views: ViewsConfig = field(default_factory=ViewsConfig)


@dataclass
class BackboneConfig:
    """``width`` scales channels (ResNet, ConvNet) or the embedding width (ViT); ``stem`` is the ResNets' (auto: CIFAR
    stem up to 64 px); ``patch_size`` the ViTs' (auto: 4 below 96 px, 16 from 96 px)."""

    name: str = MISSING
    width: float = 1.0
    stem: str = "auto"
    patch_size: Any = "auto"


@dataclass
class OptimConfig:
    name: str = MISSING
    lr: float = 0.3
    scale_lr: Any = "linear"  # linear | sqrt | none (true = linear, false = none)
    weight_decay: float = 1e-6
    momentum: float = 0.9
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    trust_coefficient: float = 0.001
    exclude_bias_and_norm: bool = True
    warmup_epochs: Any = "auto"
    min_lr_ratio: float = 0.0


@dataclass
class TrainerConfig:
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32"
    channels_last: bool = False
    max_epochs: int = 100
    max_steps: int = -1
    limit_train_batches: Any = 1.0
    log_every_n_steps: int = 10
    gradient_clip_val: float | None = None
    sync_batchnorm: bool = False
    deterministic: bool = False
    enable_progress_bar: bool = True


@dataclass
class CSVLoggerConfig:
    flush_logs_every_n_steps: int = 50


@dataclass
class TensorBoardLoggerConfig:
    default_hp_metric: bool = False


@dataclass
class LoggerConfig:
    csv: CSVLoggerConfig | None = None
    tensorboard: TensorBoardLoggerConfig | None = None


@dataclass
class EvalConfig:
    """kNN monitor and linear-probe protocol, shared by pretraining (online) and ``sslrun finetune``. ``layer``: the
    backbone stage ``sslrun finetune`` evaluates, ``last`` or ``layer1`` .. ``layer4`` (pooled)."""

    knn_k: int = 20
    knn_temperature: float = 0.1
    every_n_epochs: int = 1
    probe_lr: float = 0.1
    probe_epochs: int = 100
    layer: str = "last"


@dataclass
class MethodConfig:
    """Fields every method has; each method module subclasses this with its own hyper-parameters."""

    name: str = MISSING
    proj_hidden_dim: int = 512
    proj_output_dim: int = 128


@dataclass
class PretrainConfig:
    method: MethodConfig = MISSING
    backbone: BackboneConfig = MISSING
    data: DataConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    optim: OptimConfig = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0


@dataclass
class FinetuneConfig:
    pretrained: str = "none"
    mode: str = "linear"
    backbone: BackboneConfig = MISSING
    data: DataConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    optim: OptimConfig = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0


@dataclass
class ExportConfig:
    pretrained: str = MISSING
    out: str = "encoder.pt"


def no_patches(cfg: BackboneConfig) -> None:
    """UserError for ``backbone.patch_size`` set on a backbone that has no patches."""
    if cfg.patch_size != "auto":
        raise UserError(f"backbone.patch_size is for ViT backbones; backbone={cfg.name} has no patches")


def backbone_config(values: dict) -> DictConfig:
    """A typed backbone config from the plain dict stored in a checkpoint."""
    return OmegaConf.merge(OmegaConf.structured(BackboneConfig), values)


def validate(cfg: DictConfig, schema: Any) -> DictConfig:
    """Merge ``cfg`` onto the structured ``schema`` (struct mode on); raise UserError naming any bad key or value."""
    base = OmegaConf.structured(schema)
    OmegaConf.set_struct(base, True)
    plain = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    plain.pop("hydra", None)
    try:
        merged = OmegaConf.merge(base, plain)
    except ConfigKeyError as err:
        raise UserError(unknown_key_message(base, str(err.full_key))) from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise UserError(f"bad value for {key!r}: {err.msg}") from None
    OmegaConf.set_struct(merged, True)
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise UserError(f"missing value for {', '.join(missing)}: pass it as key=value")
    if "trainer" in merged and str(merged.trainer.precision) not in PRECISIONS:
        raise UserError(f"trainer.precision={merged.trainer.precision!r} is not one of: {', '.join(PRECISIONS)}")
    return merged


def unknown_key_message(cfg: DictConfig, full_key: str) -> str:
    """'unknown key 'trainer.max_epoch' (did you mean 'max_epochs'?); valid keys under 'trainer': ...'."""
    parent, _, leaf = full_key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    while parent and not isinstance(node, DictConfig):
        parent, _, leaf = parent.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
    valid = sorted(str(k) for k in node.keys()) if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(leaf, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    where = f"under {parent!r}" if parent else "at the top level"
    return f"unknown key {full_key!r}{hint}; valid keys {where}: {', '.join(valid)}"
