"""Frozen-feature helpers shared by the kNN monitor and ``sslrun finetune``: extraction and weighted kNN."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader


def on_device(loader: DataLoader, device: torch.device, channels_last: bool = False):
    """(images on ``device``, in channels_last when asked, labels) for each batch of ``loader``."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for images, labels in loader:
        yield images.to(device, memory_format=memory_format), labels


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    loader: DataLoader,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``backbone`` in eval mode over ``loader``; returns fp32 features (M, D) and labels (M,) on CPU."""
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    for images, y in on_device(loader, device, channels_last):
        with autocast():
            feats.append(backbone(images).float().cpu())
        labels.append(y)
    backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)


PRECISE_BN_IMAGES = 2048


def uses_precise_bn(setting: str | bool, backbone_name: str) -> bool:
    """``eval.precise_bn``: ``auto`` is on for library models (timm, torchvision, a user's module), off for sslrun's
    own, whose tables were measured without it and whose batch norm (momentum 0.1) keeps up at short budgets."""
    from sslrun.config import LIBRARY_BACKBONES

    return backbone_name in LIBRARY_BACKBONES if setting == "auto" else bool(setting)


@torch.no_grad()
def precise_bn(
    backbone: nn.Module,
    loader: DataLoader,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    channels_last: bool = False,
    max_images: int = PRECISE_BN_IMAGES,
) -> int:
    """Recompute every batch norm's running statistics as the plain average over the first ``max_images`` images of
    ``loader`` ("precise BN", Wu & Johnson 2021, as pycls does before evaluating). Libraries set momenta for long
    ImageNet schedules (torchvision's MobileNetV3 and EfficientNet: 0.01), so at a short budget, and always at random
    init, the running statistics are mostly their initial (0, 1) and eval-mode features shrink layer after layer.
    Only the batch norms run in training mode (dropout stays off). Returns the images used (0: no batch norm)."""
    norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    was_training, momenta = backbone.training, [m.momentum for m in norms]
    backbone.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average of the batches' statistics
        m.train()
    seen = 0
    try:
        for images, _ in on_device(loader, device, channels_last):
            if len(images) < 2:
                continue
            with autocast():
                backbone(images[: max_images - seen])
            seen += min(len(images), max_images - seen)
            if seen >= max_images:
                break
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        backbone.train(was_training)
    return seen


def knn_predict(
    bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, num_classes: int, k: int, temperature: float
) -> torch.Tensor:
    """Weighted kNN vote (Wu et al. 2018, as in DINO/LightlySSL): cosine similarity, weights exp(sim / T).

    bank: (M, D), bank_labels: (M,), queries: (Q, D) -> class scores (Q, num_classes).
    """
    bank = F.normalize(bank, dim=1)
    scores = []
    for chunk in F.normalize(queries, dim=1).split(1024):
        sim, idx = (chunk @ bank.T).topk(min(k, bank.shape[0]), dim=1)
        weights = (sim / temperature).exp()
        votes = torch.zeros(chunk.shape[0], num_classes)
        votes.scatter_add_(1, bank_labels[idx], weights)
        scores.append(votes)
    return torch.cat(scores)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` highest scores (k clipped to the number of classes)."""
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices
    return (top == labels[:, None]).any(dim=1).float().mean().item()


def rankme(feats: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al. 2023, arXiv 2210.02885): exp of the entropy of the normalised singular values of the
    (M, D) features; a label-free quality signal between 1 (collapsed) and min(M, D) (full rank)."""
    singular = torch.linalg.svdvals(feats.double())
    p = singular / singular.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))
