"""Contrastive losses: SimCLR's NT-Xent (Chen et al. 2020, arXiv 2002.05709) and two-tower InfoNCE (MoCo v3 / CLIP).

Both are ``mean(lse_i - s_i,pos(i))`` over rows, with s = q @ k.T / temperature on L2-normalised embeddings and
lse_i the log-sum-exp of row i over its columns (its own column excluded in NT-Xent). Only the log-sum-exp touches
the quadratic logit matrix, so it is the one part with interchangeable backends:
- ``naive``: the dense (rows, columns) matrix, masked to -inf before the exp; the reference path.
- ``chunked``: PyTorch, row chunks at a time, recomputed in the backward pass (``sslrun.losses.chunked``).
- ``triton``: fused tiled kernels with an online log-sum-exp (``sslrun.kernels.nt_xent``), tiling after Inf-CL
  (arXiv 2410.17243). Needs CUDA, or ``TRITON_INTERPRET=1`` for the CPU emulator used in tests.
- ``auto``: ``triton`` for CUDA tensors when triton imports, else ``chunked``. Size is not consulted: on a CPU
  ``chunked`` ran within ~25% of ``naive``'s time at 2N = 1k-16k (D = 128) and faster at 32k, with far less
  memory (scripts/bench_contrastive_loss.py), so there is no small-problem regime worth a switch.

Symmetric backward: with P_ij = exp(s_ij - lse_i) and g_i = dL/dlse_i, dL/dz_k = (1/t) sum_j (g_k P_kj + g_j P_jk) z_j
and, s being symmetric, P_jk = exp(s_kj - lse_j): the rows of z_k's chunk give its whole gradient in one pass.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

from sslrun.kernels import triton_unavailable_reason
from sslrun.losses.chunked import ieee_fp32_matmuls, lse_chunked
from sslrun.registry import Registry, unknown_name_message

NT_XENT_BACKENDS = ("auto", "triton", "chunked", "naive")

LSE_BACKENDS: Registry = Registry("loss backend")
"""name -> lse(q (R, D), k (M, D) | None, self_cols (R,) | None, scale) -> (R,) fp32; k None means k = q."""


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast would run the logits' matmul in bf16/fp16 while the positive term stays fp32 (the loss of identical
    views at temperature 0.1 came out 0.000 instead of 0.034 under CPU bf16 autocast); the loss picks its own
    precision from its inputs' dtype instead."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


@LSE_BACKENDS.register("naive")
def lse_naive(q: Tensor, k: Tensor | None, self_cols: Tensor | None, scale: float) -> Tensor:
    """Dense reference: the whole (R, M) logit matrix, self columns set to -inf before ``logsumexp``. fp32 on CUDA
    is computed without TF32 in the forward; its backward is autograd's and follows torch's matmul precision."""
    q = q.float()
    with ieee_fp32_matmuls(q.device):
        logits = torch.mm(q * scale, (q if k is None else k.float()).T)
    if self_cols is not None:
        logits = logits.scatter(1, self_cols[:, None], float("-inf"))
    return torch.logsumexp(logits, dim=1)


LSE_BACKENDS.register("chunked")(lse_chunked)


@LSE_BACKENDS.register("triton")
def lse_triton(q: Tensor, k: Tensor | None, self_cols: Tensor | None, scale: float) -> Tensor:
    """Fused Triton kernels; ``triton`` is imported here, on first use."""
    from sslrun.kernels.nt_xent import lse_triton as kernel

    return kernel(q, k, self_cols, scale)


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """The backend that ``backend`` runs as for tensors on ``device`` ("auto" resolved); ValueError if it cannot run."""
    if backend not in NT_XENT_BACKENDS:
        raise ValueError(unknown_name_message("loss backend", backend, list(NT_XENT_BACKENDS)))
    device = torch.device(device)
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_unavailable_reason(device) is None else "chunked"
    reason = triton_unavailable_reason(device) if backend == "triton" else None
    if reason is not None:
        others = ", ".join(name for name in NT_XENT_BACKENDS if name != backend)
        raise ValueError(f"loss backend 'triton' cannot run: {reason}; choose one of: {others}")
    return backend


def _normalize(z: Tensor) -> Tensor:
    """L2-normalise rows in fp32, then return to the caller's dtype (the backends choose their compute precision)."""
    return F.normalize(z.float(), dim=1).to(z.dtype)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"contrastive temperature must be > 0, got {temperature}")


def nt_xent(
    z1: Tensor, z2: Tensor, temperature: float, backend: str = "auto", row_offset: int = 0, rows: int | None = None
) -> Tensor:
    """SimCLR NT-Xent over Z = cat(z1, z2): the partner of row i is (i + N) mod 2N, the diagonal is excluded.

    z1, z2: (N, D) two views, any float dtype and strides, normalised here. Scores rows [row_offset,
    row_offset + rows) of z1 and the same rows of z2 (2 * rows rows) against all 2N columns and returns their mean,
    a () fp32 tensor. Defaults score all 2N rows. Under DDP each rank passes the gathered z1, z2 and its own row
    block: the mean of the rank losses is the global loss.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must both be (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    _check_temperature(temperature)
    n = z1.shape[0]
    rows = n if rows is None else rows
    if not (0 <= row_offset and 1 <= rows and row_offset + rows <= n):
        raise ValueError(f"row block [{row_offset}, {row_offset + rows}) is not inside the {n} rows of each view")
    lse_fn = LSE_BACKENDS.get(resolve_backend(backend, z1.device))
    with _no_autocast(z1.device):
        return _nt_xent(z1, z2, temperature, lse_fn, row_offset, rows)


def _nt_xent(z1: Tensor, z2: Tensor, temperature: float, lse_fn, row_offset: int, rows: int) -> Tensor:
    n = z1.shape[0]
    z = _normalize(torch.cat([z1, z2]))
    mine = slice(row_offset, row_offset + rows)
    a, b = z[:n][mine], z[n:][mine]
    positives = (a.float() * b.float()).sum(dim=1) / temperature
    if rows == n:
        lse = lse_fn(z, None, torch.arange(2 * n, device=z.device), 1.0 / temperature)
    else:
        own = torch.arange(row_offset, row_offset + rows, device=z.device)
        lse = lse_fn(torch.cat([a, b]), z, torch.cat([own, own + n]), 1.0 / temperature)
    return (lse.sum() - 2 * positives.sum()) / (2 * rows)


def info_nce(q: Tensor, k: Tensor, temperature: float, backend: str = "auto", row_offset: int = 0) -> Tensor:
    """Two-tower InfoNCE: cross-entropy of q @ k.T / temperature with the positive of query i at key row_offset + i.

    q: (n, D) queries, k: (M, D) keys (n + row_offset <= M), normalised here; no self mask. Returns the () fp32 mean
    over the n queries.
    """
    if q.ndim != 2 or k.ndim != 2 or q.shape[1] != k.shape[1]:
        raise ValueError(f"q and k must be (n, D) and (M, D), got {tuple(q.shape)} and {tuple(k.shape)}")
    _check_temperature(temperature)
    n = q.shape[0]
    if not (0 <= row_offset and n + row_offset <= k.shape[0]):
        raise ValueError(f"positives [{row_offset}, {row_offset + n}) are not inside the {k.shape[0]} keys")
    lse_fn = LSE_BACKENDS.get(resolve_backend(backend, q.device))
    with _no_autocast(q.device):
        qn, kn = _normalize(q), _normalize(k)
        positives = (qn.float() * kn[row_offset : row_offset + n].float()).sum(dim=1) / temperature
        return (lse_fn(qn, kn, None, 1.0 / temperature) - positives).mean()
