"""EMA teachers (BYOL, MoCo, DINO): a frozen copy of student modules, moved towards them after every optimizer step
with a momentum that follows a cosine from ``base`` to ``final`` over the run's optimizer steps (BYOL, Grill et al.
2020, section 3.2). The step count is the trainer's: it follows ``trainer.max_steps``, ``max_epochs`` and gradient
accumulation (the update runs only when an optimizer step happened). Teachers are ordinary submodules, so their
weights are in the checkpoint; they have ``requires_grad=False``, so they are in no optimizer group."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from sslrun.config import UNIT, MethodConfig, checked
from sslrun.methods.parts import backbone_views


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with gradients off: the teacher starts equal to the student."""
    teacher = copy.deepcopy(module)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def cosine_momentum(step: int, total_steps: int, base: float, final: float = 1.0) -> float:
    """final - (final - base) * (cos(pi * step / total) + 1) / 2: ``base`` at step 0, ``final`` at the last step."""
    progress = min(1.0, step / max(1, total_steps))
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


@torch.no_grad()
def ema_update(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, over parameters only: the teacher's BatchNorm
    running statistics are its own, updated by its forward passes (as in MoCo and BYOL)."""
    for s, t in zip(student.parameters(), teacher.parameters(), strict=True):
        t.lerp_(s.detach(), 1.0 - momentum)


@dataclass
class MomentumConfig(MethodConfig):
    """Fields of a method with an EMA teacher: the momentum goes from ``momentum_base`` to ``momentum_final``."""

    momentum_base: float = checked(0.99, UNIT)
    momentum_final: float = checked(1.0, UNIT)


@torch.no_grad()
def teacher_embeddings(backbone: nn.Module, head: nn.Module, views: list[torch.Tensor]) -> torch.Tensor:
    """A teacher's head over its backbone's features of ``views`` (one pass per same-shaped run), without gradients."""
    return head(backbone_views(backbone, views))
