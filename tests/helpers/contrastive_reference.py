"""Float64 dense references for the contrastive losses, written from the formulas (not from sslrun), and the
tolerances the backends are held to."""

from __future__ import annotations

import torch

EPS32 = torch.finfo(torch.float32).eps


def ref_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float, row_offset: int = 0, rows: int | None = None):
    """mean over the scored rows of log sum_{j != i} exp(s_ij) - s_i,p(i), s = zn zn^T / t, p(i) = (i + N) mod 2N."""
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    two_n = z.shape[0]
    n = two_n // 2
    s = (z @ z.T / t).masked_fill(torch.eye(two_n, dtype=torch.bool), float("-inf"))
    i = torch.arange(two_n)
    per_row = torch.logsumexp(s, dim=1) - s[i, (i + n) % two_n]
    rows = n if rows is None else rows
    mine = torch.arange(row_offset, row_offset + rows)
    return per_row[torch.cat([mine, mine + n])].mean()


def ref_info_nce(q: torch.Tensor, k: torch.Tensor, t: float, row_offset: int = 0):
    """mean over queries of log sum_j exp(s_ij) - s_i,row_offset+i, s = qn kn^T / t."""
    qn = q.double() / q.double().norm(dim=1, keepdim=True)
    kn = k.double() / k.double().norm(dim=1, keepdim=True)
    s = qn @ kn.T / t
    i = torch.arange(q.shape[0])
    return (torch.logsumexp(s, dim=1) - s[i, i + row_offset]).mean()


def make_views(two_n: int, d: int, kind: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two (N, D) views: "random", "identical" (z1 == z2) or "all_equal" (every row one direction)."""
    g = torch.Generator().manual_seed(seed)
    n = two_n // 2
    z1 = torch.randn(n, d, generator=g)
    if kind == "random":
        return z1, torch.randn(n, d, generator=g)
    if kind == "identical":
        return z1, z1.clone()
    row = torch.randn(1, d, generator=g)
    return row.expand(n, d).clone(), (3 * row).expand(n, d).clone()


def loss_tol(t: float) -> float:
    """fp32 logits carry ~eps/t absolute error each; the loss is a difference of O(1/t) terms."""
    return 1e-6 + 32 * EPS32 / t


def grad_tol(t: float, count: int, z: torch.Tensor, scale: float, factor: float = 16.0) -> torch.Tensor:
    """Per-row absolute gradient tolerance, (rows, 1): eps * (1/t) * (1/(count t)) (REFERENCES.md, NT-Xent) for a
    mean over ``count`` rows, times |grad_output| and 1/|z_row| (the L2 normalisation's Jacobian); ``factor``: slack."""
    norms = z.detach().double().norm(dim=1, keepdim=True)
    return factor * EPS32 * (1 / t) * (1 / (count * t)) * abs(scale) / norms + 1e-9


def check(loss_fn, ref_fn, inputs: list[torch.Tensor], t: float, count: int, scale: float = 1.0, factor: float = 16.0):
    """Run ``loss_fn`` on fp32 leaves (or the given dtype) and ``ref_fn`` on float64 copies; compare loss and grads."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    loss = loss_fn(*leaves)
    grads = torch.autograd.grad(loss * scale, leaves)
    ref_leaves = [x.detach().double().requires_grad_() for x in inputs]
    ref = ref_fn(*ref_leaves)
    ref_grads = torch.autograd.grad(ref * scale, ref_leaves)
    assert loss.dtype == torch.float32 and loss.ndim == 0
    assert abs(loss.item() - ref.item()) <= loss_tol(t), (loss.item(), ref.item(), loss_tol(t))
    for grad, ref_grad, x in zip(grads, ref_grads, inputs, strict=True):
        assert grad.shape == x.shape and grad.dtype == x.dtype
        err = (grad.double() - ref_grad).abs()
        tol = grad_tol(t, count, x, scale, factor)
        assert torch.all(err <= tol), f"max err {err.max().item():.3g}, worst err/tol {(err / tol).max().item():.3g}"
    return loss, grads


def autocast_forward(loss_fn):
    """The loss's forward under CPU bf16 autocast; check() takes the backward outside it, as Lightning does."""

    def forward(*leaves):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return loss_fn(*leaves)

    return forward
