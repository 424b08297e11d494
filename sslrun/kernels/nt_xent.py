"""Triton kernels for the contrastive log-sum-exp (SimCLR NT-Xent, arXiv 2002.05709; tiled as in Inf-CL,
arXiv 2410.17243). Import only when the Triton backend is requested: this module imports ``triton``.

Forward: each program owns BLOCK_M rows, streams BLOCK_N column tiles with an online log-sum-exp and stores only the
per-row LSE (fp32). Backward recomputes the tiles from the inputs and the saved LSE; P = exp(S - lse_row), g = dL/dlse.
- Symmetric case (all 2N rows against all 2N columns): S is symmetric, so the program owning rows K accumulates
  (g_K exp(S_KJ - lse_K) + g_J exp(S_KJ - lse_J)) @ Z_J, which is the whole gradient of Z_K: one pass, no atomics.
- Row-block case (DDP: local rows against the gathered columns) and two-tower case: the rows and the columns are
  different tensors, so a row pass computes dQ = (g P) @ K and a separate column pass, whose programs own column
  blocks and loop over all rows, computes dK = (g P)^T @ Q. Deterministic, no atomics, 8 R M D FLOPs for both.
Output feature blocks (BLOCK_DO) are a second grid axis: for D > BLOCK_DO the logit tiles are recomputed per block.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from sslrun.kernels import triton_interpreting


# Compact argument lists for the Triton kernels (one argument per line would triple them).
# fmt: off
@triton.jit
def _scores(q, k, rows, cols, n_rows, n_cols, self_cols, D, sq0, sq1, sk0, sk1, scale, HAS_SELF: tl.constexpr,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, UPCAST: tl.constexpr,
            PRECISION: tl.constexpr):
    """(BLOCK_M, BLOCK_N) fp32 tile of scale * q[rows] @ k[cols].T, -inf outside the matrix and on self columns."""
    row_ok = rows < n_rows
    col_ok = cols < n_cols
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        d_ok = offs_d < D
        a = tl.load(q + rows[:, None] * sq0 + offs_d[None, :] * sq1, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        b = tl.load(k + cols[:, None] * sk0 + offs_d[None, :] * sk1, mask=col_ok[:, None] & d_ok[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, tl.trans(b), acc, input_precision=PRECISION)
    valid = row_ok[:, None] & col_ok[None, :]
    if HAS_SELF:
        valid = valid & (cols[None, :] != self_cols[:, None])
    return tl.where(valid, acc * scale, float("-inf"))


@triton.jit
def _lse_fwd(q, k, self_idx, lse, n_rows, n_cols, D, sq0, sq1, sk0, sk1, scale, HAS_SELF: tl.constexpr,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, UPCAST: tl.constexpr,
             PRECISION: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    self_cols = tl.load(self_idx + rows, mask=row_ok, other=-1) if HAS_SELF else rows
    run_max = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    run_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for c0 in range(0, n_cols, BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)
        s = _scores(q, k, rows, cols, n_rows, n_cols, self_cols, D, sq0, sq1, sk0, sk1, scale, HAS_SELF, BLOCK_M,
                    BLOCK_N, BLOCK_D, UPCAST, PRECISION)
        new_max = tl.maximum(run_max, tl.max(s, axis=1))
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        run_sum = run_sum * tl.exp(run_max - shift) + tl.sum(tl.exp(s - shift[:, None]), axis=1)
        run_max = new_max
    run_sum = tl.where(row_ok, run_sum, 1.0)
    tl.store(lse + rows, run_max + tl.log(run_sum), mask=row_ok)


@triton.jit
def _bwd_rows(q, k, self_idx, lse, g, dq, n_rows, n_cols, D, sq0, sq1, sk0, sk1, scale, HAS_SELF: tl.constexpr,
              SYMMETRIC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
              BLOCK_DO: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    self_cols = tl.load(self_idx + rows, mask=row_ok, other=-1) if HAS_SELF else rows
    lse_r = tl.load(lse + rows, mask=row_ok, other=0.0)
    g_r = tl.load(g + rows, mask=row_ok, other=0.0)
    offs_o = tl.program_id(1) * BLOCK_DO + tl.arange(0, BLOCK_DO)
    o_ok = offs_o < D
    acc = tl.zeros((BLOCK_M, BLOCK_DO), dtype=tl.float32)
    for c0 in range(0, n_cols, BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)
        col_ok = cols < n_cols
        s = _scores(q, k, rows, cols, n_rows, n_cols, self_cols, D, sq0, sq1, sk0, sk1, scale, HAS_SELF, BLOCK_M,
                    BLOCK_N, BLOCK_D, UPCAST, PRECISION)
        w = tl.exp(s - lse_r[:, None]) * g_r[:, None]
        if SYMMETRIC:
            lse_c = tl.load(lse + cols, mask=col_ok, other=0.0)
            g_c = tl.load(g + cols, mask=col_ok, other=0.0)
            w += tl.exp(s - lse_c[None, :]) * g_c[None, :]
        kt = tl.load(k + cols[:, None] * sk0 + offs_o[None, :] * sk1, mask=col_ok[:, None] & o_ok[None, :], other=0.0)
        if UPCAST:
            kt = kt.to(tl.float32)
        acc = tl.dot(w.to(kt.dtype), kt, acc, input_precision=PRECISION)
    tl.store(dq + rows[:, None] * D + offs_o[None, :], acc * scale, mask=row_ok[:, None] & o_ok[None, :])


@triton.jit
def _bwd_cols(q, k, self_idx, lse, g, dk, n_rows, n_cols, D, sq0, sq1, sk0, sk1, scale, HAS_SELF: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DO: tl.constexpr,
              UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < n_cols
    offs_o = tl.program_id(1) * BLOCK_DO + tl.arange(0, BLOCK_DO)
    o_ok = offs_o < D
    acc = tl.zeros((BLOCK_N, BLOCK_DO), dtype=tl.float32)
    for r0 in range(0, n_rows, BLOCK_M):
        rows = r0 + tl.arange(0, BLOCK_M)
        row_ok = rows < n_rows
        self_cols = tl.load(self_idx + rows, mask=row_ok, other=-1) if HAS_SELF else rows
        lse_r = tl.load(lse + rows, mask=row_ok, other=0.0)
        g_r = tl.load(g + rows, mask=row_ok, other=0.0)
        s = _scores(q, k, rows, cols, n_rows, n_cols, self_cols, D, sq0, sq1, sk0, sk1, scale, HAS_SELF, BLOCK_M,
                    BLOCK_N, BLOCK_D, UPCAST, PRECISION)
        w = tl.exp(s - lse_r[:, None]) * g_r[:, None]
        qt = tl.load(q + rows[:, None] * sq0 + offs_o[None, :] * sq1, mask=row_ok[:, None] & o_ok[None, :], other=0.0)
        if UPCAST:
            qt = qt.to(tl.float32)
        acc = tl.dot(tl.trans(w).to(qt.dtype), qt, acc, input_precision=PRECISION)
    tl.store(dk + cols[:, None] * D + offs_o[None, :], acc * scale, mask=col_ok[:, None] & o_ok[None, :])


# fmt: on


def _blocks(d: int) -> dict[str, int]:
    """Fixed tile sizes (no autotune: it misbehaves in the interpreter). Small tiles there exercise the masked tails."""
    if triton_interpreting():
        return {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_D": 32, "BLOCK_DO": min(64, max(16, triton.next_power_of_2(d)))}
    return {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_D": 32, "BLOCK_DO": min(128, max(16, triton.next_power_of_2(d)))}


class _TritonLSE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor | None, self_cols: Tensor | None, scale: float, precision: str):
        cols = q if k is None else k
        self_idx = None if self_cols is None else self_cols.to(torch.int32).contiguous()
        n_rows, n_cols, d = q.shape[0], cols.shape[0], q.shape[1]
        blocks = _blocks(d)
        lse = torch.empty(n_rows, device=q.device, dtype=torch.float32)
        common = (n_rows, n_cols, d, q.stride(0), q.stride(1), cols.stride(0), cols.stride(1), scale)
        flags = {"HAS_SELF": self_idx is not None, "UPCAST": triton_interpreting(), "PRECISION": precision}
        grid = (triton.cdiv(n_rows, blocks["BLOCK_M"]),)
        _lse_fwd[grid](q, cols, _or(self_idx, lse), lse, *common, **flags, **_without(blocks, "BLOCK_DO"))
        ctx.save_for_backward(q, k, self_idx, lse)
        ctx.scale, ctx.flags = scale, flags
        return lse

    @staticmethod
    def backward(ctx, grad_lse: Tensor):
        q, k, self_idx, lse = ctx.saved_tensors
        cols = q if k is None else k
        n_rows, n_cols, d = q.shape[0], cols.shape[0], q.shape[1]
        blocks = _blocks(d)
        g = grad_lse.float().contiguous()
        common = (n_rows, n_cols, d, q.stride(0), q.stride(1), cols.stride(0), cols.stride(1), ctx.scale)
        n_out = triton.cdiv(d, blocks["BLOCK_DO"])
        dq = torch.empty(q.shape, device=q.device, dtype=torch.float32)
        grid = (triton.cdiv(n_rows, blocks["BLOCK_M"]), n_out)
        pointers = (q, cols, _or(self_idx, lse), lse, g)
        _bwd_rows[grid](*pointers, dq, *common, SYMMETRIC=k is None, **ctx.flags, **blocks)
        dk = None
        if k is not None:
            dk = torch.empty(k.shape, device=k.device, dtype=torch.float32)
            grid = (triton.cdiv(n_cols, blocks["BLOCK_N"]), n_out)
            _bwd_cols[grid](*pointers, dk, *common, **ctx.flags, **blocks)
            dk = dk.to(k.dtype)
        return dq.to(q.dtype), dk, None, None, None


def _or(tensor: Tensor | None, placeholder: Tensor) -> Tensor:
    """Kernels take a pointer even for an unused (constexpr-disabled) argument."""
    return placeholder if tensor is None else tensor


def _without(blocks: dict[str, int], key: str) -> dict[str, int]:
    return {name: size for name, size in blocks.items() if name != key}


def default_precision() -> str:
    """fp32 ``tl.dot`` precision that follows ``torch.set_float32_matmul_precision`` ("highest" -> IEEE)."""
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def lse_triton(
    q: Tensor, k: Tensor | None, self_cols: Tensor | None, scale: float, input_precision: str | None = None
) -> Tensor:
    """Per-row log-sum-exp of ``scale * q @ k.T`` with row a's column ``self_cols[a]`` excluded, fused in Triton.

    q: (R, D) rows; k: (M, D) columns, or None for the symmetric case k = q (``self_cols`` then ``arange(R)``);
    self_cols: (R,) integer or None for no mask. fp32/bf16/fp16 inputs, fp32 accumulation; returns (R,) fp32.
    input_precision: "ieee" or "tf32" for fp32 ``tl.dot`` (default: follows torch's fp32 matmul precision).
    """
    precision = input_precision or default_precision()
    if k is not None and k.dtype != q.dtype:
        raise ValueError(f"rows and columns must share a dtype, got {q.dtype} and {k.dtype}")
    return _TritonLSE.apply(q, k, self_cols, scale, precision)
