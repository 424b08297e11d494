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
    if not feats:  # an empty share (a DDP rank without an eval shard)
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(feats), torch.cat(labels)


def _world() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _comm_device() -> torch.device:
    """Where collectives take their tensors: NCCL wants them on the GPU, gloo on the CPU."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_features(feats: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Under DDP, the features and labels of every rank's eval shard (rank r holds items r, r + W, ...; see
    ``SSLDataModule.eval_shard``) gathered on every rank in dataset order; as they are in one process."""
    world = _world()
    if world == 1:
        return feats, labels
    dist, device = torch.distributed, _comm_device()
    shapes = [torch.zeros(2, dtype=torch.long, device=device) for _ in range(world)]
    dist.all_gather(shapes, torch.tensor([len(feats), feats.shape[1]], device=device))
    sizes, width = [int(s[0]) for s in shapes], max(int(s[1]) for s in shapes)
    padded = torch.zeros(max(sizes), width + 1, device=device)
    padded[: len(feats), :width] = feats  # an empty share is (0, 0)
    padded[: len(feats), width] = labels.float()  # labels are small ints: exact in fp32
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    parts = [part[:n].cpu() for part, n in zip(parts, sizes, strict=True)]
    total = sum(sizes)
    if all(n == len(range(r, total, world)) for r, n in enumerate(sizes)):  # rank r held items r, r + W, ...
        out = torch.empty(total, width + 1)
        for r, part in enumerate(parts):
            out[r::world] = part
    else:  # a stream's shares (whole shards): rank order
        out = torch.cat(parts)
    return out[:, :width].contiguous(), out[:, width].round().long()


def _sync_batch_norms(norms: list[nn.Module], count: int) -> int:
    """Under DDP, every rank's batch norms get the statistics of all ranks' calibration images together (the
    ``count``-weighted mean of the per-rank means and of the per-rank E[x^2]); returns the images of all ranks."""
    if _world() == 1:
        return count
    dist, device = torch.distributed, _comm_device()
    total = torch.tensor([float(count)], device=device)
    dist.all_reduce(total)
    share = count / max(float(total), 1.0)
    for m in norms:
        mean, var = m.running_mean.float(), m.running_var.float()
        stats = (torch.cat([mean, var + mean * mean]) * share).to(device)
        dist.all_reduce(stats)
        mean, square = stats.to(m.running_mean.device).chunk(2)
        m.running_mean.copy_(mean)
        m.running_var.copy_((square - mean * mean).clamp_min(0))
    return int(total)


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
    Only the batch norms run in training mode (dropout stays off). Under DDP ``loader`` is this rank's eval shard:
    each rank calibrates on ``max_images`` / world of its images and the statistics are then combined across ranks.
    Returns the images used, on all ranks together (0: no batch norm)."""
    norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    was_training, momenta = backbone.training, [m.momentum for m in norms]
    backbone.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average of the batches' statistics
        m.train()
    seen, max_images = 0, max(1, max_images // _world())
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
    return _sync_batch_norms(norms, seen)


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
