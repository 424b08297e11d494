"""Chunked PyTorch log-sum-exp over contrastive logits, the memory-lean fallback of the NT-Xent / InfoNCE losses.

Rows are processed ``chunk`` at a time, so only a (chunk, columns) block of the logit matrix is alive at any moment;
the backward pass recomputes each block from the saved inputs and per-row log-sum-exp instead of storing the
softmax. The tiling follows Inf-CL (arXiv 2410.17243); the symmetric trick is described in ``contrastive.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

CHUNK_ELEMENTS = 1 << 23
"""Logits per row chunk (32 MiB of fp32); tuned with ``scripts/bench_contrastive_loss.py`` on a 2-core CPU."""


@contextlib.contextmanager
def ieee_fp32_matmuls(device: torch.device) -> Iterator[None]:
    """torch's fp32 matmuls without TF32 on CUDA within the block (restored after). The loss is a difference of
    O(1/temperature) terms and its positive term is exact fp32: TF32 logits (10-bit mantissa) put the log-sum-exp
    off by up to ~7e-2 at temperature 0.01 (tests/test_kernels_nt_xent.py emulates it)."""
    previous = torch.get_float32_matmul_precision()
    if device.type != "cuda" or previous == "highest":
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _chunks(n_rows: int, n_cols: int, chunk_elements: int) -> list[slice]:
    step = max(1, chunk_elements // max(1, n_cols))
    return [slice(start, min(start + step, n_rows)) for start in range(0, n_rows, step)]


def _logits(rows: Tensor, cols: Tensor, self_cols: Tensor | None, scale: float) -> Tensor:
    """(r, D), (M, D) -> (r, M) scaled logits with each row's own column set to -inf."""
    logits = torch.mm(rows * scale, cols.T)
    if self_cols is not None:
        logits.scatter_(1, self_cols[:, None], float("-inf"))
    return logits


class _ChunkedLSE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor | None, self_cols: Tensor | None, scale: float, chunk_elements: int):
        with ieee_fp32_matmuls(q.device):
            return _ChunkedLSE._forward(ctx, q, k, self_cols, scale, chunk_elements)

    @staticmethod
    def _forward(ctx, q: Tensor, k: Tensor | None, self_cols: Tensor | None, scale: float, chunk_elements: int):
        cols = q if k is None else k
        lse = q.new_empty(q.shape[0])
        for rows in _chunks(q.shape[0], cols.shape[0], chunk_elements):
            mask = None if self_cols is None else self_cols[rows]
            lse[rows] = torch.logsumexp(_logits(q[rows], cols, mask, scale), dim=1)
        ctx.save_for_backward(q, k, self_cols, lse)
        ctx.scale, ctx.chunk_elements = scale, chunk_elements
        return lse

    @staticmethod
    def backward(ctx, grad_lse: Tensor):
        with ieee_fp32_matmuls(grad_lse.device):
            return _ChunkedLSE._backward(ctx, grad_lse)

    @staticmethod
    def _backward(ctx, grad_lse: Tensor):
        q, k, self_cols, lse = ctx.saved_tensors
        scale = ctx.scale
        g = grad_lse.to(lse.dtype)
        cols = q if k is None else k
        dq = torch.empty_like(q)
        dk = None if k is None else torch.zeros_like(k)
        for rows in _chunks(q.shape[0], cols.shape[0], ctx.chunk_elements):
            mask = None if self_cols is None else self_cols[rows]
            logits = _logits(q[rows], cols, mask, scale)
            weights = torch.sub(logits, lse[rows, None]).exp_().mul_(g[rows, None])
            if k is None:
                weights.add_(logits.sub_(lse[None, :]).exp_().mul_(g[None, :]))
            else:
                dk.addmm_(weights.T, q[rows], alpha=scale)
            dq[rows] = torch.mm(weights, cols).mul_(scale)
        return dq, dk, None, None, None


def lse_chunked(
    q: Tensor, k: Tensor | None, self_cols: Tensor | None, scale: float, chunk_elements: int | None = None
) -> Tensor:
    """Per-row log-sum-exp of ``scale * q @ k.T`` with row a's column ``self_cols[a]`` excluded.

    q: (R, D) rows; k: (M, D) columns, or None for the symmetric case k = q with the diagonal excluded
    (then ``self_cols`` must be ``arange(R)``); self_cols: (R,) int64 or None for no mask. Returns (R,) fp32.
    Inputs are upcast to fp32; memory is O(chunk_elements + (R + M) * D), chunk_elements defaulting to CHUNK_ELEMENTS.
    """
    k32 = None if k is None else k.float()
    return _ChunkedLSE.apply(q.float(), k32, self_cols, scale, chunk_elements or CHUNK_ELEMENTS)
