"""Triton NT-Xent / InfoNCE kernels through the CPU interpreter (TRITON_INTERPRET=1, set by conftest.py), fp32,
against the float64 reference. Shapes are small and not multiples of the 32-wide tiles, so masked tails run."""

import pytest
import torch
from contrastive_reference import check, loss_tol, make_views, ref_info_nce, ref_nt_xent

pytest.importorskip("triton")

from sslrun.kernels.nt_xent import lse_triton  # noqa: E402
from sslrun.losses import info_nce, nt_xent  # noqa: E402

# (2N, D, temperature, kind): every 2N in {2, 18, 34, 130, 256} and D in {1, 5, 64, 130}; D = 130 spans three
# 64-wide output blocks of the backward grid and five 32-wide reduction blocks.
CASES = [
    (2, 130, 0.5, "random"),
    (18, 1, 0.01, "identical"),
    (34, 5, 1.0, "random"),
    (34, 64, 0.01, "all_equal"),
    (130, 130, 0.01, "identical"),
    (256, 5, 0.05, "random"),
]


@pytest.mark.parametrize(("two_n", "d", "t", "kind"), CASES)
def test_triton_nt_xent_matches_float64_reference(two_n, d, t, kind):
    z1, z2 = make_views(two_n, d, kind)
    loss, grads = check(
        lambda a, b: nt_xent(a, b, t, "triton"), lambda a, b: ref_nt_xent(a, b, t), [z1, z2], t, two_n, scale=1.7
    )
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.slow
@pytest.mark.parametrize(("two_n", "d", "t"), [(256, 130, 0.01), (256, 64, 0.1)])
def test_triton_nt_xent_largest_shapes(two_n, d, t):
    z1, z2 = make_views(two_n, d, "random")
    check(lambda a, b: nt_xent(a, b, t, "triton"), lambda a, b: ref_nt_xent(a, b, t), [z1, z2], t, two_n)


@pytest.mark.parametrize(("two_n", "d", "row_offset", "rows", "t"), [(34, 130, 3, 7, 0.1), (130, 5, 40, 25, 0.01)])
def test_triton_row_block_uses_the_column_pass(two_n, d, row_offset, rows, t):
    z1, z2 = make_views(two_n, d, "random", seed=3)
    check(
        lambda a, b: nt_xent(a, b, t, "triton", row_offset=row_offset, rows=rows),
        lambda a, b: ref_nt_xent(a, b, t, row_offset, rows),
        [z1, z2],
        t,
        2 * rows,
        scale=-0.3,
    )


@pytest.mark.parametrize(("n", "m", "d", "row_offset", "t"), [(1, 1, 1, 0, 1.0), (33, 70, 64, 37, 0.02)])
def test_triton_info_nce_matches_float64_reference(n, m, d, row_offset, t):
    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(n, d, generator=g), torch.randn(m, d, generator=g)
    check(
        lambda a, b: info_nce(a, b, t, "triton", row_offset),
        lambda a, b: ref_info_nce(a, b, t, row_offset),
        [q, k],
        t,
        n,
        scale=2.0,
    )


def test_triton_accepts_non_contiguous_views():
    g = torch.Generator().manual_seed(2)
    base1 = torch.randn(5, 17, generator=g, requires_grad=True)
    base2 = torch.randn(17, 10, generator=g, requires_grad=True)
    loss = nt_xent(base1.T, base2[:, ::2], 0.2, "triton")
    grads = torch.autograd.grad(loss, [base1, base2])
    ref_bases = [base1.detach().double().requires_grad_(), base2.detach().double().requires_grad_()]
    ref = ref_nt_xent(ref_bases[0].T, ref_bases[1][:, ::2], 0.2)
    assert abs(loss.item() - ref.item()) <= loss_tol(0.2)
    for grad, ref_grad in zip(grads, torch.autograd.grad(ref, ref_bases), strict=True):
        torch.testing.assert_close(grad.double(), ref_grad, rtol=0, atol=1e-6)


def test_strided_kernel_inputs_and_ieee_precision():
    """The kernels read through strides: a transposed (R, D) view gives the same LSE and gradient as a copy."""
    g = torch.Generator().manual_seed(8)
    base = torch.randn(40, 19, generator=g)
    q = (base / base.norm(dim=0)).requires_grad_()
    self_cols = torch.arange(19)
    lse = lse_triton(q.T, None, self_cols, 4.0, input_precision="ieee")
    lse.backward(torch.linspace(-1, 1, 19))
    ref_q = q.detach().T.double().requires_grad_()
    logits = (4.0 * ref_q @ ref_q.T).masked_fill(torch.eye(19, dtype=torch.bool), float("-inf"))
    ref = torch.logsumexp(logits, dim=1)
    ref.backward(torch.linspace(-1, 1, 19, dtype=torch.float64))
    torch.testing.assert_close(lse.double(), ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(q.grad.T.double(), ref_q.grad, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_half_precision_inputs(dtype):
    z1, z2 = make_views(34, 64, "random", seed=6)
    z1, z2 = z1.to(dtype).requires_grad_(), z2.to(dtype).requires_grad_()
    loss = nt_xent(z1, z2, 0.1, "triton")
    loss.backward()
    ref_z = [z1.detach().double().requires_grad_(), z2.detach().double().requires_grad_()]
    ref = ref_nt_xent(*ref_z, 0.1)
    assert loss.dtype == torch.float32 and z1.grad.dtype == dtype
    assert abs(loss.item() - ref.item()) < 0.05
    for grad, ref_grad in zip([z1.grad, z2.grad], torch.autograd.grad(ref, ref_z), strict=True):
        assert (grad.double() - ref_grad).abs().max() < 0.05 * ref_grad.abs().max()
