"""Losses of the joint-embedding methods, as pure functions: tensors in, a () fp32 scalar (or codes) out.

Each follows its reference implementation's arithmetic (named per function). None of them gathers: under DDP a
method passes embeddings it has gathered with gradients (``SSLMethod.gather``) and every rank computes the same global
loss; the gather's backward sums the ranks' gradients and DDP's mean undoes the sum, which gives exactly the
single-process gradient. Sinkhorn is the exception: it normalises over the global batch with all-reduces
(``distributed=True``), as SwAV's ``distributed_sinkhorn`` does.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"expected two (N, D) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def byol(p: Tensor, z: Tensor) -> Tensor:
    """BYOL (Grill et al. 2020, arXiv 2006.07733): 2 - 2 cos(p_i, z_i) averaged over rows. ``z`` is the teacher's
    projection and gets no gradient."""
    _check_pair(p, z)
    return (2 - 2 * F.cosine_similarity(p.float(), z.detach().float(), dim=1)).mean()


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """SimSiam's D(p, z) (Chen & He 2021, arXiv 2011.10566): -cos(p_i, stopgrad(z_i)) averaged over rows."""
    _check_pair(p, z)
    return -F.cosine_similarity(p.float(), z.detach().float(), dim=1).mean()


def _standardise(z: Tensor, eps: float = 1e-5) -> Tensor:
    """Over the batch, biased variance, as ``BatchNorm1d(affine=False)`` in training mode."""
    return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + eps)


def _off_diagonal(m: Tensor) -> Tensor:
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def barlow_twins(z1: Tensor, z2: Tensor, lambd: float = 5e-3) -> Tensor:
    """Barlow Twins (Zbontar et al. 2021, arXiv 2103.03230): z1, z2 (N, D) each standardised over the batch, C =
    z1^T z2 / N (D, D), loss = sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2, no further scale."""
    _check_pair(z1, z2)
    n = z1.shape[0]
    c = _standardise(z1.float()).T @ _standardise(z2.float()) / n
    return (1 - torch.diagonal(c)).pow(2).sum() + lambd * _off_diagonal(c).pow(2).sum()


def vicreg(
    z1: Tensor, z2: Tensor, sim_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0
) -> Tensor:
    """VICReg (Bardes et al. 2022, arXiv 2105.04906) as the official code: MSE invariance; variance: hinge at 1 on
    sqrt(unbiased var + 1e-4) per dimension, averaged over dimensions and over the two branches; covariance of the
    centred embeddings over N - 1, squared off-diagonal entries summed and divided by D, the two branches summed."""
    _check_pair(z1, z2)
    z1, z2 = z1.float(), z2.float()
    n, d = z1.shape
    invariance = F.mse_loss(z1, z2)
    z1, z2 = z1 - z1.mean(dim=0), z2 - z2.mean(dim=0)
    std1, std2 = torch.sqrt(z1.var(dim=0) + 1e-4), torch.sqrt(z2.var(dim=0) + 1e-4)
    variance = (F.relu(1 - std1).mean() + F.relu(1 - std2).mean()) / 2
    cov1, cov2 = z1.T @ z1 / (n - 1), z2.T @ z2 / (n - 1)
    covariance = _off_diagonal(cov1).pow(2).sum() / d + _off_diagonal(cov2).pow(2).sum() / d
    return sim_weight * invariance + var_weight * variance + cov_weight * covariance


def _global_logsumexp(x: Tensor, dim: int | None, world: int) -> Tensor:
    """logsumexp of ``x`` over ``dim`` (None: all entries), the entries of every rank included when world > 1."""
    top = (x.max() if dim is None else x.max(dim=dim, keepdim=True).values).clone()
    if world > 1:
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    total = (x - top).exp().sum() if dim is None else (x - top).exp().sum(dim=dim, keepdim=True)
    if world > 1:
        dist.all_reduce(total)
    return top + total.log()


@torch.no_grad()
def sinkhorn(scores: Tensor, epsilon: float = 0.05, iterations: int = 3, distributed: bool = False) -> Tensor:
    """SwAV's Sinkhorn-Knopp (Caron et al. 2020, arXiv 2006.09882, ``distributed_sinkhorn``): scores (B, K) ->
    codes (B, K), each row summing to 1, the K prototypes given equal mass over the batch. With ``distributed`` the
    sums over the batch run over the global batch (all-reduced; B = local rows x world size).

    The official arithmetic, Q = exp(scores / epsilon) normalised in turn over prototypes and samples, carried out on
    log Q: the same codes, but a wide score range or a small epsilon cannot underflow a whole row to 0 (0 / 0)."""
    world = dist.get_world_size() if distributed and dist.is_available() and dist.is_initialized() else 1
    log_q = scores.float().T / epsilon  # (K, B); fp32 (fp64 is missing on some devices, and the log domain needs none)
    k, b = log_q.shape[0], log_q.shape[1] * world
    log_q = log_q - _global_logsumexp(log_q, None, world)
    for _ in range(iterations):
        log_q = log_q - _global_logsumexp(log_q, 1, world) - math.log(k)  # each prototype: total mass 1/K
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(b)  # each sample: mass 1/B
    return (log_q + math.log(b)).exp().T.to(scores.dtype if scores.is_floating_point() else torch.float32)


def swav(scores: list[Tensor], codes: list[Tensor], temperature: float = 0.1) -> Tensor:
    """SwAV's swapped prediction: ``scores`` (B, K) of every crop against the prototypes, ``codes`` (B, K) the
    Sinkhorn codes of the first ``len(codes)`` crops; each code is predicted from every other crop:
    mean over codes of [sum over other crops v of -mean_i sum_k q_ik log softmax(s_v / temperature)_ik] / (V - 1)."""
    if len(scores) < 2 or not 1 <= len(codes) <= len(scores):
        raise ValueError(f"need >= 2 crops and 1..crops codes, got {len(scores)} crops and {len(codes)} codes")
    loss = scores[0].new_zeros((), dtype=torch.float32)
    for i, q in enumerate(codes):
        sub = sum(
            -(q.float() * F.log_softmax(s.float() / temperature, dim=1)).sum(dim=1).mean()
            for v, s in enumerate(scores)
            if v != i
        )
        loss = loss + sub / (len(scores) - 1)
    return loss / len(codes)


def dino(
    student: list[Tensor], teacher: list[Tensor], center: Tensor, student_temp: float = 0.1, teacher_temp: float = 0.04
) -> Tensor:
    """DINO (Caron et al. 2021, arXiv 2104.14294): ``student`` logits (B, K) of every crop, ``teacher`` logits (B, K)
    of the first ``len(teacher)`` crops (the global ones), ``center`` (K,). Cross-entropy between
    softmax((t - center) / teacher_temp) (no gradient) and log softmax(s / student_temp) over every pair of
    different crops, averaged over pairs."""
    if not teacher or len(student) < 2:
        raise ValueError(f"need >= 2 student crops and >= 1 teacher crop, got {len(student)} and {len(teacher)}")
    targets = [F.softmax((t.detach().float() - center) / teacher_temp, dim=1) for t in teacher]
    logs = [F.log_softmax(s.float() / student_temp, dim=1) for s in student]
    terms = [-(q * logs[v]).sum(dim=1).mean() for i, q in enumerate(targets) for v in range(len(logs)) if v != i]
    return torch.stack(terms).mean()


def moco(q: Tensor, k: Tensor, queue: Tensor, temperature: float = 0.2) -> Tensor:
    """MoCo (He et al. 2020, arXiv 1911.05722; v2: 2003.04297): q, k (N, D), queue (M, D) of past keys; rows are
    L2-normalised here. Cross-entropy of [q_i . k_i, q_i . queue] / temperature with the positive at index 0; the key
    and the queue get no gradient."""
    _check_pair(q, k)
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.detach().float(), dim=1)
    queue = F.normalize(queue.detach().float(), dim=1)
    logits = torch.cat([(q * k).sum(dim=1, keepdim=True), q @ queue.T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def nearest_neighbour(z: Tensor, support: Tensor) -> Tensor:
    """NNCLR's support-set lookup (Dwibedi et al. 2021, arXiv 2104.14548): for each row of z (N, D) the row of
    ``support`` (M, D) with the highest cosine similarity, L2-normalised, without gradient."""
    with torch.no_grad():
        support = F.normalize(support.float(), dim=1)
        index = (F.normalize(z.float(), dim=1) @ support.T).argmax(dim=1)
        return support[index]
