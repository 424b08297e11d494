"""CPU emulation of the tensor-core input precisions of an fp32 ``tl.dot``, to show what each does to the
contrastive loss (the precision rule of ``sslrun.kernels.nt_xent``; no triton import).

Triton's "tf32" feeds raw fp32 bits to the tensor cores, which read 10 mantissa bits (truncation); "tf32x3" splits
a = big + small with big = cvt.rna.tf32(a) (round to nearest, ties away) and sums small*big + big*small + big*big
in fp32 (triton lib/Dialect/TritonGPU/Transforms/F32DotTC.cpp). The product of two TF32 values is exact in fp32,
so an fp32 CPU matmul of the emulated operands is faithful up to the summation order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

PRECISIONS = ("float64", "ieee", "tf32", "tf32x3")


def truncate_tf32(x: Tensor) -> Tensor:
    """fp32 -> the TF32 value a tensor core reads from raw fp32 bits (low 13 mantissa bits dropped)."""
    return (x.view(torch.int32) & ~0x1FFF).view(torch.float32)


def round_tf32(x: Tensor) -> Tensor:
    """fp32 -> TF32 rounded to nearest, ties away from zero (``cvt.rna.tf32.f32``)."""
    return ((x.view(torch.int32) + 0x1000) & ~0x1FFF).view(torch.float32)


def emulated_dot(a: Tensor, b: Tensor, precision: str) -> Tensor:
    """a @ b.T for fp32 (R, D), (M, D) as a GPU ``tl.dot(..., input_precision=precision)`` computes it; "float64":
    in float64 (the reference)."""
    if precision == "float64":
        return a.double() @ b.double().T
    if precision == "tf32":
        return truncate_tf32(a) @ truncate_tf32(b).T
    if precision == "tf32x3":
        a_big, b_big = round_tf32(a), round_tf32(b)
        a_small, b_small = truncate_tf32(a - a_big), truncate_tf32(b - b_big)
        return a_small @ b_big.T + a_big @ b_small.T + a_big @ b_big.T
    if precision == "ieee":
        return a @ b.T
    raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def emulated_nt_xent(z1: Tensor, z2: Tensor, temperature: float, precision: str) -> Tensor:
    """NT-Xent with the logits' dot product at ``precision`` and the positive term in exact fp32, as
    ``sslrun.losses.nt_xent`` computes it; "float64" computes everything in float64 (the reference)."""
    dtype = torch.float64 if precision == "float64" else torch.float32
    z = F.normalize(torch.cat([z1, z2]).to(dtype), dim=1)
    n = z1.shape[0]
    logits = (emulated_dot(z, z, precision) / temperature).fill_diagonal_(float("-inf"))
    positives = (z[:n] * z[n:]).sum(dim=1) / temperature
    return (torch.logsumexp(logits, dim=1).sum() - 2 * positives.sum()) / (2 * n)
