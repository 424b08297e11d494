"""The method contract: what an SSL method implements, what it may call, and the plumbing every method shares.

A method is one class registered in ``METHODS`` (``@METHODS.register("name")``) with one YAML,
``configs/method/<name>.yaml``. It implements:

- ``build(self, config, inputs)``: create the method's modules. ``config`` is an instance of the method's ``Config``;
  ``inputs`` (``Inputs``) says what one example of a view looks like and how many classes the labels have;
  ``self.backbone`` (with ``feature_dim``) already exists.
- ``ssl_step(self, views)``: one batch per view the method declared -> (SSL loss, backbone features (B, D) of the
  first view, which the online probe reads detached).
- ``Config``: a dataclass nested in the class (by convention at its end), subclassing ``MethodConfig`` with the
  method's own keys, typed and with ``checked`` rules. A method with a projector adds ``ProjectorConfig``'s keys, one
  with EMA teachers ``MomentumConfig``'s, a multi-crop one ``MultiCropConfig``'s.

It may declare:

- ``views``: the views the data module makes (default two SimCLR-style views), or ``view_specs(cls, config)`` where
  they depend on the config;
- ``teachers``: the modules that get an EMA teacher. For each name, once ``build`` has run, the plumbing adds
  ``teacher_<name>``, a frozen copy that follows ``self.<name>`` after every optimizer step with a momentum going from
  ``config.momentum_base`` to ``config.momentum_final`` on a cosine over the run;
- ``backbones``: the backbone names it can train (None: any);
- ``image_grids``: pictures for the report; and any Lightning hook (``on_fit_start``, ``on_after_backward``, ...).

Two-player methods (GAN, adversarial autoencoder) subclass ``TwoPlayerMethod`` (``sslrun.methods.adversarial``).

A method may call ``self.config``, ``self.backbone``, ``self.draw`` (per-sample randomness independent of the world
size), ``self.rank``, ``self.world_size``, ``self.epochs_to_steps``, ``self.total_steps``, ``self.log``, and the free
functions of ``sslrun.methods.parts`` (``gather``, ``backbone_views``) and ``sslrun.methods.momentum``
(``teacher_embeddings``). It never reads the rest of the run's config: optimizer, schedule, precision, the probe and
checkpoints are the plumbing's (``self.run_config``). Nothing in the contract names a modality: a view is any batch
tensor, ``inputs.shape`` one example's shape (images: (channels, height, width)).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sslrun.backbones.weights import start_backbone
from sslrun.config import MethodConfig
from sslrun.data.views import TWO_VIEWS, ViewSpec
from sslrun.eval.online_probe import OnlineLinearProbe
from sslrun.methods import parts
from sslrun.methods.momentum import cosine_momentum, ema_update, frozen_copy
from sslrun.optim import lightning_optimizers, param_groups

TEACHER = "teacher_"


@dataclass(frozen=True)
class Inputs:
    """What a method is built for: ``shape``, one example of a full-size view without the batch dimension (images:
    (channels, height, width)), and ``num_classes`` of the labels (0: none; the probe is off)."""

    shape: tuple[int, ...]
    num_classes: int


class SSLMethod(pl.LightningModule):
    Config: type[MethodConfig] = MethodConfig
    backbones: tuple[str, ...] | None = None  # the backbones the method can train (None: any)
    teachers: tuple[str, ...] = ()  # modules given an EMA teacher, ``teacher_<name>``, once ``build`` has run
    views: Sequence[ViewSpec] = TWO_VIEWS  # what ``view_specs`` returns unless a method's views depend on its config
    optimizer_steps_per_batch = 1  # optimizers stepped per batch (two-player methods: 2)

    def __init__(
        self,
        cfg: dict[str, Any],
        in_channels: int,
        image_size: int,
        num_classes: int,
        normalization: dict | None = None,
    ) -> None:
        """Plumbing, not for methods to override: ``cfg`` is the whole resolved run config as plain containers (it is
        stored in the checkpoint, with the data's channels, image size and input ``normalization`` (per-channel mean
        and std of the pixels in [0, 1]), to rebuild the model and describe its input for export)."""
        super().__init__()
        self.save_hyperparameters(logger=False)  # the loggers get the resolved config from sslrun.trackers.log_config
        self.run_config: DictConfig = OmegaConf.create(cfg)
        self.config = self.typed_config(self.run_config.method)
        self.check_backbone(self.run_config.method.name, self.run_config.backbone.name)
        self.backbone = start_backbone(self.run_config.backbone, in_channels, image_size)
        # No labels (an unlabelled image folder): no probe; the kNN monitor reports label-free signals instead.
        self.probe = OnlineLinearProbe(self.backbone.feature_dim, num_classes) if num_classes > 0 else None
        self.channels_last = bool(self.run_config.trainer.channels_last)
        self._momentum_step = -1
        self.build(self.config, Inputs((in_channels, image_size, image_size), num_classes))
        for name in self.teachers:
            self.add_module(TEACHER + name, frozen_copy(getattr(self, name)))

    @classmethod
    def typed_config(cls, method: DictConfig | dict) -> Any:
        """The method's keys as an instance of ``cls.Config``. Keys the schema no longer has are dropped: a checkpoint
        written before they were removed (e.g. the projector keys of methods without a projector) still loads; new
        runs are checked against the schema before this (``sslrun.config.validate``)."""
        known = {f.name for f in dataclasses.fields(cls.Config)}
        values = {k: v for k, v in OmegaConf.to_container(OmegaConf.create(method), resolve=True).items() if k in known}
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls.Config), values))

    def build(self, config: Any, inputs: Inputs) -> None:
        """Create the method's modules (``self.backbone`` exists)."""
        raise NotImplementedError

    @classmethod
    def check_backbone(cls, method: str, backbone: str) -> None:
        """ValueError when the method cannot train ``backbone`` (``backbones``)."""
        if cls.backbones is not None and backbone not in cls.backbones:
            raise ValueError(
                f"method={method} needs one of backbone={', '.join(cls.backbones)}, not backbone={backbone}"
            )

    @classmethod
    def view_specs(cls, config: Any) -> Sequence[ViewSpec]:
        """The views this method trains on, in the order ``ssl_step`` receives them (default: ``views``, two SimCLR
        views unless the method sets its own)."""
        return cls.views

    def ssl_step(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch per view spec -> (SSL loss, backbone features (B, D) of ``views[0]`` for the online probe, which
        detaches them)."""
        raise NotImplementedError

    def image_grids(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pictures of (B, C, H, W) normalised validation images, by name: rows of images (e.g. inputs over their
        reconstructions, or samples) stacked into (rows * B, C, H, W); none by default."""
        return {}

    def draw(self, n: int, sample: Callable[[int, torch.Generator], Any]) -> Any:
        """``parts.draw`` seeded by the run's seed and this optimizer step: the same rows whatever the world size."""
        return parts.draw(n, sample, int(self.run_config.seed), self.global_step, self.device)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(student, teacher) module pairs updated by EMA after every optimizer step: one per name in ``teachers``."""
        return [(getattr(self, name), getattr(self, TEACHER + name)) for name in self.teachers]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        views, labels = self.unpack(batch)
        loss, feats = self.ssl_step(views)
        return loss + self.probe_step(loss, feats, labels)

    def unpack(self, batch: Any) -> tuple[list[torch.Tensor], torch.Tensor]:
        views, labels = batch
        if self.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        return list(views), labels

    def probe_step(self, loss: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Logs the SSL ``loss``; the online probe's loss on the detached ``feats`` (0 without labels)."""
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        if self.probe is None:
            return loss.new_zeros(())
        probe_loss, probe_acc = self.probe.loss(feats, labels)
        self.log("probe_train_acc", probe_acc, on_step=False, on_epoch=True, sync_dist=True)
        return probe_loss

    @property
    def world_size(self) -> int:
        return 1 if self._trainer is None else self.trainer.world_size

    @property
    def rank(self) -> int:
        return 0 if self._trainer is None else self.trainer.global_rank

    def total_steps(self) -> int:
        """Optimizer steps in the whole run (``max_steps``, epochs and gradient accumulation counted)."""
        return 1 if self._trainer is None else max(1, int(self.trainer.estimated_stepping_batches))

    def epochs_to_steps(self, epochs: float) -> int:
        """``epochs`` of training in optimizer steps, at most 10% of the run (so a short run is not all warmup)."""
        if self._trainer is None:
            return 0
        batches = self.trainer.num_training_batches
        per_epoch = 1 if batches == float("inf") else max(1, int(batches) // self.trainer.accumulate_grad_batches)
        return min(math.ceil(epochs * per_epoch), int(0.1 * self.total_steps()))

    def on_train_start(self) -> None:
        self._momentum_step = self.trainer.global_step

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """EMA teachers follow their students after each optimizer step (not after an accumulation-only batch)."""
        pairs = self.momentum_pairs()
        step = self.trainer.global_step
        if not pairs or step == self._momentum_step:
            return
        self._momentum_step = step
        m = self.config
        momentum = cosine_momentum(step - 1, self.total_steps(), m.momentum_base, m.momentum_final)
        for student, teacher in pairs:
            ema_update(student, teacher, momentum)
        self.log("momentum", momentum, on_step=True, on_epoch=False)

    def probe_groups(self) -> list[dict]:
        """The online probe's parameter group (its own lr, no weight decay, no LARS); none without labels."""
        if self.probe is None:
            return []
        params = list(self.probe.parameters())
        return [{"params": params, "lr": self.run_config.eval.probe_lr, "weight_decay": 0.0, "lars_exclude": True}]

    def configure_optimizers(self):
        # Teachers have requires_grad=False, so param_groups leaves them out of the optimizer. Parameters held by the
        # method itself (MAE's mask token) count as well as those of its submodules.
        ssl_params = [p for name, p in self.named_parameters() if not name.startswith("probe.")]
        groups = param_groups(ssl_params, self.run_config.optim) + self.probe_groups()
        return lightning_optimizers(self.trainer, groups, self.run_config.optim, self.run_config.data.batch_size)
