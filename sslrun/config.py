"""Typed schemas for every config group, and the check that turns a composed Hydra config into a validated one.

YAML files under ``configs/`` carry values; these dataclasses carry types. A composed config is merged onto its
schema with struct mode on, so an unknown key or a value of the wrong type fails before any training starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigKeyError, InterpolationResolutionError, OmegaConfBaseException

from sslrun.errors import UserError

LIBRARY_BACKBONES = ("timm", "torchvision", "module")  # backbones named by backbone.model (module: sslrun.api's)
FREE_FORM = ("backbone.kwargs",)  # mappings whose keys no schema knows (+backbone.kwargs.<argument>=<value>)
PRECISIONS = ("32", "64", "bf16-mixed", "16-mixed", "bf16-true", "16-true")


@dataclass(frozen=True)
class Rule:
    """A value check carried by a schema field (``checked``); ``validate`` applies it before any work starts."""

    test: Callable[[Any], bool]
    expect: str

    def holds(self, value: Any) -> bool:
        try:
            return bool(self.test(value))
        except TypeError:  # e.g. a string where a number belongs
            return False


def checked(default: Any, rule: Rule) -> Any:
    """A dataclass field whose value must satisfy ``rule`` (None always passes: an optional value left unset)."""
    return field(default=default, metadata={"rule": rule})


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def one_of(*choices: str) -> Rule:
    return Rule(lambda v: v in choices, f"one of: {', '.join(choices)}")


def or_auto(rule: Rule) -> Rule:
    return Rule(lambda v: v == "auto" or rule.holds(v), f"{rule.expect}, or auto")


POSITIVE = Rule(lambda v: _number(v) and v > 0, "a number > 0")
POSITIVE_INT = Rule(lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "an integer > 0")
NON_NEGATIVE = Rule(lambda v: _number(v) and v >= 0, "a number >= 0")
NON_NEGATIVE_INT = Rule(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0")
UNIT = Rule(lambda v: _number(v) and 0 <= v <= 1, "between 0 and 1")
OPEN_UNIT = Rule(lambda v: _number(v) and 0 < v < 1, "between 0 and 1 (exclusive)")
HALF_OPEN_UNIT = Rule(lambda v: _number(v) and 0 < v <= 1, "in (0, 1]")
LR_SCALING = Rule(lambda v: v in ("linear", "sqrt", "none", True, False), "linear, sqrt, none, true or false")
LAYER_NAMES = ("last", "layer1", "layer2", "layer3", "layer4")


def _layer_like(value: str) -> bool:
    return value.startswith("layer") and value[5:].isdigit()


# a library model (timm, torchvision) also takes one of its own module names: checked when the backbone is built
LAYER = Rule(
    lambda v: v in LAYER_NAMES or (isinstance(v, str) and ("." in v or v.isidentifier()) and not _layer_like(v)),
    f"one of: {', '.join(LAYER_NAMES)}, or a timm/torchvision module name (stages.2)",
)
RESUME_CHOICES = ("auto", "never", "overwrite")
RESUME = Rule(
    lambda v: v in RESUME_CHOICES or Path(str(v)).expanduser().is_file(),
    f"one of: {', '.join(RESUME_CHOICES)}, or an existing checkpoint file",
)


@dataclass
class ViewsConfig:
    """Two-view augmentation recipe (SimCLR); sizes follow ``data.image_size``. ``recipe`` (auto: ``small`` below
    96 px, ``imagenet`` from 96 px) fills every value left null; a value set here overrides the recipe's.
    ``batched`` (auto: when the dataset is held in memory) makes the views a batch at a time on the device."""

    recipe: str = checked("auto", one_of("auto", "small", "imagenet"))
    crop_min_scale: float | None = checked(None, HALF_OPEN_UNIT)
    flip_p: float | None = checked(None, UNIT)
    jitter_p: float | None = checked(None, UNIT)
    jitter_strength: float | None = checked(None, NON_NEGATIVE)
    grayscale_p: float | None = checked(None, UNIT)
    blur_p: float | None = checked(None, UNIT)
    batched: Any = checked("auto", Rule(lambda v: v in ("auto", True, False), "true, false or auto"))


@dataclass
class DataConfig:
    name: str = MISSING
    root: str | None = None
    download: bool = True
    batch_size: int = checked(256, POSITIVE_INT)
    num_workers: Any = checked("auto", or_auto(NON_NEGATIVE_INT))
    image_size: Any = checked("auto", or_auto(POSITIVE_INT))
    cache: str = "auto"
    cache_max_mb: int = checked(4096, POSITIVE)
    strict: bool = False
    limit: int | None = checked(None, POSITIVE_INT)
    val_fraction: float = checked(0.2, OPEN_UNIT)
    # sslrun finetune trains the probe / fine-tune (and uses as the kNN bank) a fixed subset of the labelled train
    # split, seeded by the run's seed, class-stratified, at least one image per class; pretraining keeps 1.0
    label_fraction: float = checked(1.0, HALF_OPEN_UNIT)
    # data=webdataset: shard url patterns (braces expand; without them, data.root's index.json lists the shards)
    # and the samples each loader worker holds to shuffle its stream
    urls: str | None = None
    val_urls: str | None = None
    shuffle_buffer: int = checked(1000, POSITIVE_INT)
    views: ViewsConfig = field(default_factory=ViewsConfig)


@dataclass
class BackboneConfig:
    """``width`` scales channels (ResNet, ConvNet) or the embedding width (ViT); ``stem`` is the ResNets' (auto: CIFAR
    stem up to 64 px); ``patch_size`` the ViTs' (auto: 4 below 96 px, 16 from 96 px; a timm ViT keeps its own from
    96 px). ``model`` and ``kwargs`` belong to ``backbone=timm`` and ``backbone=torchvision``."""

    name: str = MISSING
    width: float = checked(1.0, POSITIVE)
    stem: str = checked("auto", one_of("auto", "cifar", "imagenet"))
    patch_size: Any = checked("auto", or_auto(POSITIVE_INT))
    # backbone=timm | torchvision: the library's model name and extra constructor arguments (e.g. drop_path_rate)
    model: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    # start from these weights (a state_dict .pt/.pth, .safetensors, an sslrun run dir, checkpoint or export);
    # weights_strict=false skips keys that do not fit (a classifier head, a first conv) and says which
    weights: str | None = None
    weights_strict: bool = True


@dataclass
class OptimConfig:
    """Keys every optimizer has; each optimizer's schema (``sslrun.optim``) adds its own."""

    name: str = MISSING
    lr: float = checked(0.3, POSITIVE)
    scale_lr: Any = checked("linear", LR_SCALING)
    weight_decay: float = checked(1e-6, NON_NEGATIVE)
    exclude_bias_and_norm: bool = True
    warmup_epochs: Any = checked("auto", or_auto(NON_NEGATIVE))
    min_lr_ratio: float = checked(0.0, UNIT)


@dataclass
class SGDConfig(OptimConfig):
    momentum: float = checked(0.9, UNIT)


@dataclass
class LARSConfig(SGDConfig):
    trust_coefficient: float = checked(0.001, POSITIVE)


@dataclass
class AdamConfig(OptimConfig):
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class TrainerConfig:
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"  # auto | ddp | fsdp (CUDA GPUs, ViT backbones) | any Lightning strategy name
    activation_checkpointing: bool = False  # with strategy=fsdp: recompute each transformer block in the backward
    num_nodes: int = checked(1, POSITIVE_INT)
    accumulate_grad_batches: int = checked(1, POSITIVE_INT)  # batches per optimizer step (global batch x this)
    precision: str = checked("32", one_of(*PRECISIONS))
    channels_last: bool = False
    compile: bool = False  # torch.compile of the backbone (and its EMA teacher)
    max_epochs: int = 100
    max_steps: int = -1
    limit_train_batches: Any = checked(1.0, POSITIVE)
    log_every_n_steps: int = checked(10, POSITIVE_INT)
    gradient_clip_val: float | None = checked(None, POSITIVE)
    sync_batchnorm: bool = False
    deterministic: bool = False
    enable_progress_bar: bool = True
    checkpoint_every_n_steps: int | None = checked(None, POSITIVE_INT)  # besides every epoch end (null: off)
    checkpoint_every_n_minutes: float | None = checked(30.0, POSITIVE)  # besides every epoch end (null: off)


@dataclass
class CSVLoggerConfig:
    flush_logs_every_n_steps: int = 50


@dataclass
class TensorBoardLoggerConfig:
    default_hp_metric: bool = False


@dataclass
class WandbLoggerConfig:
    project: str = "sslrun"
    entity: str | None = None
    mode: str = checked("auto", one_of("auto", "online", "offline"))
    name: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class MLflowLoggerConfig:
    experiment: str = "sslrun"
    tracking_uri: str | None = None
    run_name: str | None = None


@dataclass
class LoggerConfig:
    csv: CSVLoggerConfig | None = None
    tensorboard: TensorBoardLoggerConfig | None = None
    wandb: WandbLoggerConfig | None = None
    mlflow: MLflowLoggerConfig | None = None


@dataclass
class EvalConfig:
    """kNN monitor and linear-probe protocol, shared by pretraining (online) and ``sslrun finetune``. ``layer``: the
    backbone stage ``sslrun finetune`` evaluates, ``last`` or ``layer1`` .. ``layer4`` (pooled), or a timm/torchvision
    model's own module name."""

    knn_k: int = checked(20, POSITIVE_INT)
    knn_temperature: float = checked(0.1, POSITIVE)
    every_n_epochs: int = checked(1, POSITIVE_INT)
    probe_lr: float = checked(0.1, POSITIVE)
    probe_epochs: int = checked(100, POSITIVE_INT)
    layer: str = checked("last", LAYER)
    # evaluation (kNN monitor, RankMe, finetune's features) on at most this many images per split: seeded,
    # class-stratified subsets; null for all
    max_train_images: int | None = checked(10000, POSITIVE_INT)
    max_val_images: int | None = checked(5000, POSITIVE_INT)
    # pretrain: the kNN of the encoder before its first step, which the end of the run is compared with
    initial_knn: bool = True
    # recompute batch-norm statistics on 2048 train images before embedding (auto: for timm/torchvision/module models)
    precise_bn: Any = checked("auto", Rule(lambda v: v in ("auto", True, False), "auto, true or false"))


@dataclass
class MethodConfig:
    """The field every method has; each method module subclasses this with its own hyper-parameters."""

    name: str = MISSING


@dataclass
class ProjectorConfig(MethodConfig):
    """Fields of a method with a projection head (``proj_output_dim``: the embedding the loss sees)."""

    proj_hidden_dim: int = checked(512, POSITIVE_INT)
    proj_output_dim: int = checked(128, POSITIVE_INT)


@dataclass
class RunConfig:
    """The keys every training command has (``sslrun pretrain`` and ``sslrun finetune``), declared once."""

    backbone: BackboneConfig = MISSING
    data: DataConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    optim: OptimConfig = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    resume: str = checked("auto", RESUME)


def _fields(schema: type) -> list[tuple[str, Any, Any]]:
    """``schema``'s fields as ``make_dataclass`` takes them: (name, type, field)."""
    hints = typing.get_type_hints(schema)
    return [
        (f.name, hints[f.name], field(default=f.default, default_factory=f.default_factory, metadata=f.metadata))
        for f in dataclasses.fields(schema)
    ]


def with_run_keys(name: str, own: list[tuple[str, Any, Any]]) -> type:
    """A command's schema: its ``own`` fields (name, type, field) first, then ``RunConfig``'s, so its config files
    and printed trees start with what is particular to the command."""
    schema = dataclasses.make_dataclass(name, own + _fields(RunConfig))
    schema.__module__ = __name__
    return schema


@functools.cache
def shared_schema(schema: type) -> type:
    """``schema`` with its ``method`` and ``optim`` left untyped: their schemas are the method's and the optimizer's
    own subclasses, which live beside code that imports torch. The pre-flight checks the rest with it first, so a
    mistake there answers before torch is imported."""
    own = [
        (n, Any, field(default=None)) if t in (MethodConfig, OptimConfig) else (n, t, f) for n, t, f in _fields(schema)
    ]
    light = dataclasses.make_dataclass(f"Shared{schema.__name__}", own)
    light.__module__ = __name__
    return light


PretrainConfig = with_run_keys("PretrainConfig", [("method", MethodConfig, field(default=MISSING))])
FinetuneConfig = with_run_keys(
    "FinetuneConfig",
    [("pretrained", str, field(default="none")), ("mode", str, checked("linear", one_of("linear", "full")))],
)


@dataclass
class ExportConfig:
    pretrained: str = MISSING
    out: str = "encoder.pt"
    # auto: by the suffix of ``out`` (.safetensors: safetensors, anything else: torch)
    # timm, torchvision: a backbone=timm|torchvision model's own state_dict (torch.save), loadable by that library
    format: str = checked("auto", one_of("auto", "safetensors", "torch", "timm", "torchvision"))
    overwrite: bool = False  # replace an existing ``out`` (never a file inside a run's checkpoints/)


COMMAND_SCHEMAS = {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "export": ExportConfig}


def key_rows(schema: type, prefix: str = "") -> list[list[str]]:
    """[key, default, what it must be] for every key of ``schema`` and its nested schemas (``--help``); a field left
    untyped (``shared_schema``: a method's or an optimizer's own keys) is one row pointing at ``--cfg job``."""
    rows = []
    hints = typing.get_type_hints(schema)
    for item in dataclasses.fields(schema):
        kind = hints[item.name]
        nested = [t for t in (*typing.get_args(kind), kind) if dataclasses.is_dataclass(t)]
        if nested:
            rows += key_rows(nested[0], f"{prefix}{item.name}.")
            continue
        if kind is Any and item.default is None and item.name in ("method", "optim"):
            rows.append([f"{prefix}{item.name}.*", "", f"the chosen {item.name}'s own keys: add --cfg job to see them"])
            continue
        default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
        rule = item.metadata.get("rule")
        what = rule.expect if rule else getattr(kind, "__name__", str(kind).replace("typing.", ""))
        rows.append([prefix + item.name, "required" if default == MISSING else str(default), what])
    return rows


def backbone_config(values: dict) -> DictConfig:
    """A typed backbone config from the plain dict stored in a checkpoint."""
    return OmegaConf.merge(OmegaConf.structured(BackboneConfig), values)


def validate(cfg: DictConfig, schema: Any) -> DictConfig:
    """Merge ``cfg`` onto the structured ``schema`` (struct mode on); raise UserError naming any bad key or value."""
    base = OmegaConf.structured(schema)
    OmegaConf.set_struct(base, True)
    plain = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    plain.pop("hydra", None)
    free = {}  # free-form mappings (a library's constructor arguments): any keys, set after the typed merge
    for path in FREE_FORM:
        parent, _, leaf = path.rpartition(".")
        node = OmegaConf.select(plain, parent)
        if isinstance(node, DictConfig) and leaf in node:
            free[path] = node.pop(leaf)
            if not isinstance(free[path], DictConfig):
                raise UserError(f"{path} must be a mapping, e.g. +{path}.drop_path_rate=0.1")
    try:
        merged = OmegaConf.merge(base, plain)
    except ConfigKeyError as err:
        raise UserError(unknown_key_message(base, str(err.full_key))) from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise UserError(f"bad value for {key!r}: {err.msg}") from None
    for path, value in free.items():
        with open_dict(merged):
            OmegaConf.update(merged, path, value, merge=False)
    OmegaConf.set_struct(merged, True)
    check_interpolations(merged)
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise UserError(f"missing value for {', '.join(missing)}: pass it as key=value")
    check_values(merged)
    backbone = merged.get("backbone")
    if backbone is not None and backbone.name not in LIBRARY_BACKBONES and (backbone.model or backbone.kwargs):
        raise UserError(
            "backbone.model and backbone.kwargs are for backbone=timm or backbone=torchvision; "
            f"backbone={backbone.name} is sslrun's own (its size: backbone.width)"
        )
    if "trainer" in merged and merged.trainer.sync_batchnorm and merged.trainer.accelerator == "cpu":
        raise UserError("trainer.sync_batchnorm=true needs GPUs (PyTorch's SyncBatchNorm); on CPU set it to false")
    return merged


def check_interpolations(cfg: DictConfig) -> None:
    """UserError naming the key of an interpolation that cannot be resolved (``${oc.env:UNSET}``, a missing key).
    Hydra's own (``${hydra:...}``) resolve only inside a job and are left to it."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError as err:
        if "hydra" in str(err).lower():
            return
        reason = str(err.msg).splitlines()[0].split("while resolving interpolation: ")[-1].strip("\"'")
        raise UserError(f"cannot resolve {err.full_key}: {reason}") from None


def check_values(node: DictConfig, prefix: str = "") -> None:
    """Apply every ``checked`` field's rule in the structured config ``node`` and its nested configs; raise UserError
    naming the first key whose value breaks its rule."""
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return
    for item in dataclasses.fields(schema):
        value = node[item.name]
        rule = item.metadata.get("rule")
        if rule is not None and value is not None and not rule.holds(value):
            raise UserError(f"{prefix}{item.name}={value!r} must be {rule.expect}")
        child = node._get_node(item.name)
        if isinstance(child, DictConfig) and not child._is_none():
            check_values(child, f"{prefix}{item.name}.")


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
