"""Triton kernels for the contrastive log-sum-exp (SimCLR NT-Xent, arXiv 2002.05709; tiled as in Inf-CL,
arXiv 2410.17243, and FlashAttention's online softmax). Import only when the Triton backend is requested: this module
imports ``triton``.

Both kernels are written once over an *owner* tensor A (the rows a program owns) and an *other* tensor B (the rows
it streams): the logit tile is S = scale * A[owner] @ B[other].T.

- Forward (owner = rows q, other = columns k): each program keeps a running max and sum over its share of the
  column tiles. The grid is (row blocks, column splits): with few row blocks the columns are split so that the GPU
  still gets about two programs per SM, and the per-split (max, sum) pairs are merged on the host (O(R * splits)).
- Backward, one kernel for both passes, P = exp(S - lse_row), g = dL/dlse:
  * row pass (owner = q): dq = (g_row P) @ k, plus, in the symmetric case (k = q), the column term g_col P^T; S being
    symmetric, the program owning rows K gets the whole gradient of Z_K in one pass (no atomics, deterministic).
  * column pass (owner = k, only when k is a separate tensor that needs a gradient): dk = (g_row P)^T @ q.
  Each logit tile is computed once per pass, whatever D: the symmetric backward computes every tile once, the
  row-block (DDP) and two-tower forms twice (row pass + column pass). When D fits ``Tiles.resident_d`` the owner
  tile and the whole (BLOCK_M, D) gradient accumulator stay in the program; above it the weight tile, computed
  once, is applied to D in ``block_do``-wide chunks that accumulate in the program's own slice of the fp32 output
  (read-modify-write; no other program touches it, a barrier orders the chunks between column tiles).
- Column splits in the backward write partial gradients to (splits, rows, D) fp32 that the host sums.

Precision: fp32 inputs use ``tf32x3`` (three TF32 tensor-core products, about fp32 accuracy) when torch allows
TF32 (``torch.set_float32_matmul_precision("high" | "medium")``) and ``ieee`` (no tensor cores) at "highest";
plain ``tf32`` only when asked for by name. bf16 / fp16 inputs are multiplied in their own type with fp32
accumulation. The backward's weights are scaled by a power of two before they meet fp16 operands (P * g with
g = 1/(2N) is below fp16's range at large 2N) and the fp32 result is scaled back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import once_differentiable

from sslrun.kernels import triton_interpreting

PRECISIONS = ("ieee", "tf32x3", "tf32")
"""fp32 ``tl.dot`` input precisions accepted by name; the default is chosen by ``default_precision()``."""

# Self-mask modes: which column each owner row must skip.
MASK_NONE, MASK_OWNER, MASK_OTHER, MASK_DIAGONAL = 0, 1, 2, 3


# Compact argument lists for the Triton kernels (one argument per line would triple them).
# fmt: off
@triton.jit
def _load_rows(base, idx, n, offs_d, D, UPCAST: tl.constexpr):
    """(len(idx), len(offs_d)) tile of the row-major (n, D) tensor at base, zero outside it; int64 offsets."""
    ok = (idx < n)[:, None] & (offs_d < D)[None, :]
    tile = tl.load(base + idx.to(tl.int64)[:, None] * D + offs_d[None, :], mask=ok, other=0.0)
    if UPCAST:
        tile = tile.to(tl.float32)
    return tile


@triton.jit
def _weights_as_operand(w, b, UPCAST: tl.constexpr):
    """The fp32 weight tile in the dtype of b's elements (what the tensor cores take; the interpreter then computes
    in fp32 from the rounded values, so fp16 underflow shows there too)."""
    w = w.to(b.dtype.element_ty)
    if UPCAST:
        w = w.to(tl.float32)
    return w


@triton.jit
def _scores(a, b, a_tile, b_tile, owner, other, n_own, n_oth, self_own, self_oth, D, scale, counter,
            MASK: tl.constexpr, RESIDENT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
            BLOCK_D: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, COUNT: tl.constexpr):
    """(BLOCK_M, BLOCK_N) fp32 tile of scale * a[owner] @ b[other].T; -inf outside the matrix and on self pairs."""
    if RESIDENT:
        acc = tl.dot(a_tile, tl.trans(b_tile), input_precision=PRECISION)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            a_part = _load_rows(a, owner, n_own, offs_d, D, UPCAST)
            b_part = _load_rows(b, other, n_oth, offs_d, D, UPCAST)
            acc = tl.dot(a_part, tl.trans(b_part), acc, input_precision=PRECISION)
    if COUNT:
        tl.atomic_add(counter, BLOCK_M * BLOCK_N * (BLOCK_D if RESIDENT else tl.cdiv(D, BLOCK_D) * BLOCK_D))
    valid = (owner < n_own)[:, None] & (other < n_oth)[None, :]
    if MASK == 1:
        valid = valid & (other[None, :] != self_own[:, None])
    if MASK == 2:
        valid = valid & (owner[:, None] != self_oth[None, :])
    if MASK == 3:
        valid = valid & (owner[:, None] != other[None, :])
    return tl.where(valid, acc * scale, float("-inf"))


@triton.jit
def _split_range(n_oth, tiles_per_split, BLOCK_N: tl.constexpr):
    start = tl.program_id(1) * tiles_per_split * BLOCK_N
    return start, tl.minimum(start + tiles_per_split * BLOCK_N, n_oth)


@triton.jit
def _lse_fwd(a, b, self_idx, m_out, l_out, counter, n_own, n_oth, D, tiles_per_split, scale, MASK: tl.constexpr,
             RESIDENT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
             UPCAST: tl.constexpr, PRECISION: tl.constexpr, COUNT: tl.constexpr):
    """Per owner row and column split: the max and the sum of exp(S - max) over the split's columns."""
    owner = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    own_ok = owner < n_own
    self_own = tl.load(self_idx + owner, mask=own_ok, other=-1) if MASK == 1 else owner
    a_tile = _load_rows(a, owner, n_own, tl.arange(0, BLOCK_D), D, UPCAST) if RESIDENT else owner
    start, stop = _split_range(n_oth, tiles_per_split, BLOCK_N)
    run_max = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    run_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for o0 in range(start, stop, BLOCK_N):
        other = o0 + tl.arange(0, BLOCK_N)
        self_oth = tl.load(self_idx + other, mask=other < n_oth, other=-1) if MASK == 2 else other
        b_tile = _load_rows(b, other, n_oth, tl.arange(0, BLOCK_D), D, UPCAST) if RESIDENT else other
        s = _scores(a, b, a_tile, b_tile, owner, other, n_own, n_oth, self_own, self_oth, D, scale, counter, MASK,
                    RESIDENT, BLOCK_M, BLOCK_N, BLOCK_D, UPCAST, PRECISION, COUNT)
        new_max = tl.maximum(run_max, tl.max(s, axis=1))
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        run_sum = run_sum * tl.exp(run_max - shift) + tl.sum(tl.exp(s - shift[:, None]), axis=1)
        run_max = new_max
    out = tl.program_id(1).to(tl.int64) * n_own + owner
    tl.store(m_out + out, run_max, mask=own_ok)
    tl.store(l_out + out, run_sum, mask=own_ok)


@triton.jit
def _lse_bwd(a, b, self_idx, lse, g, grad, counter, n_own, n_oth, D, tiles_per_split, scale, MASK: tl.constexpr,
             OWNER_TERM: tl.constexpr, OTHER_TERM: tl.constexpr, RESIDENT: tl.constexpr, BLOCK_M: tl.constexpr,
             BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DO: tl.constexpr, UPCAST: tl.constexpr,
             PRECISION: tl.constexpr, COUNT: tl.constexpr):
    """grad[split, owner] = W @ b[other] over the split's other rows, W = g_own P (OWNER_TERM) + g_oth P (OTHER_TERM),
    where lse and g of OWNER_TERM are indexed by owner and those of OTHER_TERM by other. Unscaled (host scales)."""
    owner = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    own_ok = owner < n_own
    self_own = tl.load(self_idx + owner, mask=own_ok, other=-1) if MASK == 1 else owner
    lse_own = tl.load(lse + owner, mask=own_ok, other=0.0) if OWNER_TERM else tl.zeros((BLOCK_M,), tl.float32)
    g_own = tl.load(g + owner, mask=own_ok, other=0.0) if OWNER_TERM else tl.zeros((BLOCK_M,), tl.float32)
    out = grad + tl.program_id(1).to(tl.int64) * n_own * D + owner.to(tl.int64)[:, None] * D
    start, stop = _split_range(n_oth, tiles_per_split, BLOCK_N)
    offs_full = tl.arange(0, BLOCK_D)
    if RESIDENT:
        a_tile = _load_rows(a, owner, n_own, offs_full, D, UPCAST)
        acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    else:
        a_tile = owner
    for o0 in range(start, stop, BLOCK_N):
        other = o0 + tl.arange(0, BLOCK_N)
        oth_ok = other < n_oth
        self_oth = tl.load(self_idx + other, mask=oth_ok, other=-1) if MASK == 2 else other
        b_tile = _load_rows(b, other, n_oth, offs_full, D, UPCAST) if RESIDENT else other
        s = _scores(a, b, a_tile, b_tile, owner, other, n_own, n_oth, self_own, self_oth, D, scale, counter, MASK,
                    RESIDENT, BLOCK_M, BLOCK_N, BLOCK_D, UPCAST, PRECISION, COUNT)
        w = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        if OWNER_TERM:
            w += tl.exp(s - lse_own[:, None]) * g_own[:, None]
        if OTHER_TERM:
            lse_oth = tl.load(lse + other, mask=oth_ok, other=0.0)
            g_oth = tl.load(g + other, mask=oth_ok, other=0.0)
            w += tl.exp(s - lse_oth[None, :]) * g_oth[None, :]
        if RESIDENT:
            acc = tl.dot(_weights_as_operand(w, b, UPCAST), b_tile, acc, input_precision=PRECISION)
            if COUNT:
                tl.atomic_add(counter + 1, BLOCK_M * BLOCK_N * BLOCK_D)
        else:
            tl.debug_barrier()  # the previous column tile's chunk stores are visible to every thread
            for c0 in range(0, D, BLOCK_DO):
                offs_c = c0 + tl.arange(0, BLOCK_DO)
                b_part = _load_rows(b, other, n_oth, offs_c, D, UPCAST)
                ok = own_ok[:, None] & (offs_c < D)[None, :]
                part = tl.load(out + offs_c[None, :], mask=ok, other=0.0)
                part = tl.dot(_weights_as_operand(w, b, UPCAST), b_part, part, input_precision=PRECISION)
                tl.store(out + offs_c[None, :], part, mask=ok)
                if COUNT:
                    tl.atomic_add(counter + 1, BLOCK_M * BLOCK_N * BLOCK_DO)
    if RESIDENT:
        tl.store(out + offs_full[None, :], acc, mask=own_ok[:, None] & (offs_full < D)[None, :])


# fmt: on


@dataclasses.dataclass(frozen=True)
class Tiles:
    """Tile sizes. ``resident_d``: the largest padded D held whole in a program (owner tile, other tile and the
    backward's gradient accumulator); above it S is reduced over ``block_d``-wide chunks and the backward applies
    each weight tile to ``block_do``-wide output chunks. Fixed sizes, no autotune (it misbehaves in the interpreter
    and has not run on a GPU here)."""

    block_m: int
    block_n: int
    block_d: int
    block_do: int
    resident_d: int
    warps_bwd: int = 8
    stages: int = 2
    max_smem: int = 160 * 1024
    """Shared-memory budget for a resident program's owner tile + ``stages`` other tiles; block_n halves to fit."""


GPU_TILES = Tiles(block_m=64, block_n=64, block_d=64, block_do=128, resident_d=256)
INTERPRETER_TILES = Tiles(block_m=32, block_n=32, block_d=32, block_do=64, resident_d=64, warps_bwd=1, stages=1)
"""Small tiles in the interpreter exercise the masked tails and both backward paths on small shapes."""

SPLIT_BUFFER_BYTES = 256 * 2**20
"""Cap on the backward's (splits, rows, D) fp32 partial-gradient buffer."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """How one kernel launch covers an (n_own, n_oth, D) problem: the tiles, the grid and the column split."""

    resident: bool
    block_m: int
    block_n: int
    block_d: int
    block_do: int
    owner_blocks: int
    splits: int
    tiles_per_split: int
    warps: int
    stages: int

    @property
    def grid(self) -> tuple[int, int]:
        return (self.owner_blocks, self.splits)

    def constexprs(self) -> dict[str, int | bool]:
        return {"RESIDENT": self.resident, "BLOCK_M": self.block_m, "BLOCK_N": self.block_n, "BLOCK_D": self.block_d}


@dataclasses.dataclass
class _Config:
    tiles: Tiles | None = None
    splits: int | None = None
    counter: Tensor | None = None


_CONFIG = _Config()


@contextlib.contextmanager
def configured(tiles: Tiles | None = None, splits: int | None = None, counter: Tensor | None = None) -> Iterator[None]:
    """Within the block, launches use ``tiles`` (default: GPU_TILES on CUDA, INTERPRETER_TILES in the interpreter),
    ``splits`` column splits (default: enough programs for two per SM; 1 in the interpreter), and add to ``counter``
    (int64 (4,)) the multiply-adds the kernels issue, padding included: forward logits, forward weights (0),
    backward logits, backward weights. Counting costs atomics: for tests."""
    global _CONFIG
    previous, _CONFIG = _CONFIG, _Config(tiles, splits, counter)
    try:
        yield
    finally:
        _CONFIG = previous


def _target_programs(device: torch.device) -> int:
    if device.type != "cuda":
        return 1
    return 2 * torch.cuda.get_device_properties(device).multi_processor_count


def plan(
    n_own: int,
    n_oth: int,
    d: int,
    itemsize: int,
    device: torch.device,
    tiles: Tiles | None = None,
    splits: int | None = None,
    buffer_row_bytes: int = 0,
    programs: int | None = None,
) -> Plan:
    """The launch plan for one pass. Column splits: ``splits`` if given, else as many as it takes for ``programs``
    programs (default: two per SM of ``device``; 1 in the interpreter), at most one per column tile and, with
    ``buffer_row_bytes`` (bytes per owner row of a per-split output buffer), at most SPLIT_BUFFER_BYTES of buffer."""
    tiles = tiles or _CONFIG.tiles or (INTERPRETER_TILES if triton_interpreting() else GPU_TILES)
    d_pad = max(16, triton.next_power_of_2(d))
    resident = d_pad <= tiles.resident_d
    block_n = tiles.block_n
    if resident:
        block_d = d_pad
        while block_n > 16 and d_pad * itemsize * (tiles.block_m + tiles.stages * block_n) > tiles.max_smem:
            block_n //= 2
    else:
        block_d = tiles.block_d
    owner_blocks = triton.cdiv(n_own, tiles.block_m)
    other_tiles = triton.cdiv(n_oth, block_n)
    wanted = splits or _CONFIG.splits
    if wanted is None:
        if programs is None:
            programs = 1 if triton_interpreting() else _target_programs(device)
        wanted = math.ceil(programs / owner_blocks)
        if buffer_row_bytes:
            wanted = min(wanted, max(1, SPLIT_BUFFER_BYTES // (n_own * buffer_row_bytes)))
    wanted = max(1, min(wanted, other_tiles))
    tiles_per_split = triton.cdiv(other_tiles, wanted)
    return Plan(
        resident=resident,
        block_m=tiles.block_m,
        block_n=block_n,
        block_d=block_d,
        block_do=tiles.block_do,
        owner_blocks=owner_blocks,
        splits=triton.cdiv(other_tiles, tiles_per_split),
        tiles_per_split=tiles_per_split,
        warps=tiles.warps_bwd,
        stages=tiles.stages,
    )


def _forward_warps(p: Plan) -> int:
    return 4 if p.block_d <= 64 or triton_interpreting() else 8


def _merge_splits(maxes: Tensor, sums: Tensor) -> Tensor:
    """log-sum-exp from per-split (max, sum of exp(s - max)) pairs, (splits, R) each."""
    top = maxes.amax(dim=0)
    shift = torch.where(torch.isinf(top), torch.zeros_like(top), top)
    return shift + torch.log((sums * torch.exp(maxes - shift)).sum(dim=0))


def _fp16_safe_weights(g: Tensor, n_oth: int) -> tuple[Tensor, Tensor]:
    """g scaled by a power of two so that |g'| <= 2^k, 2^k = min(2^floor(log2 n_oth), 2^14): the weights P * g' of a
    row then average about 2^k / n_oth (fp16's normal range) and stay below 2 * 2^k <= 2^15 (fp16's max is 65504).
    Returns (g', factor) with g = g' * factor; powers of two, so the scaling is exact. Device-side, no sync."""
    k = min(max(n_oth, 1).bit_length() - 1, 14)
    top = g.abs().amax().clamp_min(torch.finfo(torch.float32).tiny)
    _, exponent = torch.frexp(top)  # top <= 2^exponent
    shift = k - exponent
    return torch.ldexp(g, shift), torch.ldexp(torch.ones_like(top), -shift)


def _device_guard(t: Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


class _TritonLSE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor | None, self_cols: Tensor | None, scale: float, precision: str):
        q = q.contiguous()
        k = None if k is None else k.contiguous()
        cols = q if k is None else k
        if self_cols is None:
            mask, self_idx = MASK_NONE, None
        elif k is None:
            mask, self_idx = MASK_DIAGONAL, None
        else:
            mask, self_idx = MASK_OWNER, self_cols.to(device=q.device, dtype=torch.int32).contiguous()
        n_rows, n_cols, d = q.shape[0], cols.shape[0], q.shape[1]
        counter = _CONFIG.counter  # None unless a test counts the work
        p = plan(n_rows, n_cols, d, q.element_size(), q.device)
        maxes = torch.empty(p.splits, n_rows, device=q.device, dtype=torch.float32)
        sums = torch.empty_like(maxes)
        flags = {"UPCAST": triton_interpreting(), "PRECISION": precision, "COUNT": counter is not None}
        with _device_guard(q):
            _lse_fwd[p.grid](
                q, cols, _or(self_idx, maxes), maxes, sums, _or(counter, maxes), n_rows, n_cols, d, p.tiles_per_split,
                scale, MASK=mask, **p.constexprs(), **flags, num_warps=_forward_warps(p), num_stages=p.stages,
            )  # fmt: skip
        lse = _merge_splits(maxes, sums)
        ctx.save_for_backward(q, k, self_idx, lse)
        ctx.scale, ctx.mask, ctx.flags = scale, mask, flags
        ctx.counter = counter
        return lse

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_lse: Tensor):
        q, k, self_idx, lse = ctx.saved_tensors
        need_q = ctx.needs_input_grad[0]
        need_k = k is not None and ctx.needs_input_grad[1]
        cols = q if k is None else k
        g, factor = _fp16_safe_weights(grad_lse.float().contiguous(), cols.shape[0])
        counter = None if ctx.counter is None else ctx.counter[2:]
        dq = dk = None
        with _device_guard(q):
            if need_q:
                dq = _backward_pass(q, cols, self_idx, lse, g, counter, ctx.mask, True, k is None, ctx.scale, ctx.flags)
                dq = dq.mul_(factor * ctx.scale).to(q.dtype)
            if need_k:
                mask = MASK_OTHER if ctx.mask == MASK_OWNER else MASK_NONE
                dk = _backward_pass(k, q, self_idx, lse, g, counter, mask, False, True, ctx.scale, ctx.flags)
                dk = dk.mul_(factor * ctx.scale).to(k.dtype)
        return dq, dk, None, None, None


def _backward_pass(
    a: Tensor,
    b: Tensor,
    self_idx: Tensor | None,
    lse: Tensor,
    g: Tensor,
    counter: Tensor | None,
    mask: int,
    owner_term: bool,
    other_term: bool,
    scale: float,
    flags: dict,
) -> Tensor:
    """Unscaled gradient of the owner tensor a, (n_own, D) fp32, summed over the column splits."""
    n_own, n_oth, d = a.shape[0], b.shape[0], a.shape[1]
    p = plan(n_own, n_oth, d, a.element_size(), a.device, buffer_row_bytes=4 * d)
    # The chunked (non-resident) path accumulates into its output, so that one starts at zero.
    alloc = torch.empty if p.resident else torch.zeros
    grad = alloc(p.splits, n_own, d, device=a.device, dtype=torch.float32)
    _lse_bwd[p.grid](
        a, b, _or(self_idx, lse), lse, g, grad, _or(counter, lse), n_own, n_oth, d, p.tiles_per_split, scale,
        MASK=mask, OWNER_TERM=owner_term, OTHER_TERM=other_term, BLOCK_DO=p.block_do, **p.constexprs(), **flags,
        num_warps=p.warps, num_stages=p.stages,
    )  # fmt: skip
    return grad[0] if p.splits == 1 else grad.sum(dim=0)


def _or(tensor: Tensor | None, placeholder: Tensor) -> Tensor:
    """Kernels take a pointer even for an unused (constexpr-disabled) argument."""
    return placeholder if tensor is None else tensor


def default_precision() -> str:
    """fp32 ``tl.dot`` precision: "ieee" at torch's "highest" fp32 matmul precision (the default), else "tf32x3"
    (tensor cores, about fp32 accuracy). Never plain "tf32": Triton feeds it truncated fp32 bits, and the
    log-sum-exp error grows like 1/temperature (about -5e-2 at 0.01) while the positive term stays exact fp32."""
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32x3"


def lse_triton(
    q: Tensor, k: Tensor | None, self_cols: Tensor | None, scale: float, input_precision: str | None = None
) -> Tensor:
    """Per-row log-sum-exp of ``scale * q @ k.T`` with row a's column ``self_cols[a]`` excluded, fused in Triton.

    q: (R, D) rows; k: (M, D) columns, or None for the symmetric case k = q (``self_cols`` then must be
    ``arange(R)``: the diagonal is excluded); self_cols: (R,) integer or None for no mask. fp32/bf16/fp16 inputs on
    one device, fp32 accumulation; returns (R,) fp32. input_precision: "ieee", "tf32x3" or "tf32" for fp32 inputs
    (default: ``default_precision()``).
    """
    precision = input_precision or default_precision()
    if precision not in PRECISIONS:
        raise ValueError(f"input_precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if q.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"the Triton kernels take float32, bfloat16 or float16 inputs, got {q.dtype}")
    if k is not None and (k.dtype != q.dtype or k.device != q.device):
        raise ValueError(f"rows and columns must share a dtype and device, got {q.dtype} on {q.device} and "
                         f"{k.dtype} on {k.device}")  # fmt: skip
    return _TritonLSE.apply(q, k, self_cols, scale, precision)
