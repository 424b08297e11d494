"""NT-Xent / InfoNCE: the naive and chunked backends against a float64 reference, backend selection and errors."""

import subprocess
import sys

import pytest
import torch

from helpers.contrastive_reference import (
    autocast_forward,
    check,
    grad_tol,
    loss_tol,
    make_views,
    ref_info_nce,
    ref_nt_xent,
)
from sslrun.kernels import triton_import_error
from sslrun.losses import NT_XENT_BACKENDS, info_nce, nt_xent, resolve_backend

BACKENDS = ["naive", "chunked"]
# (2N, D, temperature, kind): every 2N in {2, 18, 34, 130, 256}, every D in {1, 5, 64, 130}, temperature 1 -> 0.01.
CASES = [
    (2, 5, 0.5, "random"),
    (2, 64, 0.01, "identical"),
    (18, 1, 1.0, "random"),
    (18, 5, 0.01, "identical"),
    (18, 64, 0.1, "all_equal"),
    (34, 130, 0.2, "random"),
    (34, 5, 0.01, "all_equal"),
    (130, 64, 0.05, "random"),
    (130, 1, 0.1, "identical"),
    (256, 130, 0.01, "identical"),
    (256, 64, 0.07, "random"),
]


@pytest.fixture
def small_chunks(monkeypatch):
    """Force many row chunks (with a ragged last one) so the chunked path's tiling is exercised."""
    monkeypatch.setattr("sslrun.losses.chunked.CHUNK_ELEMENTS", 7 * 37)


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("two_n", "d", "t", "kind"), CASES)
def test_nt_xent_matches_float64_reference(backend, two_n, d, t, kind):
    z1, z2 = make_views(two_n, d, kind)
    loss, grads = check(lambda a, b: nt_xent(a, b, t, backend), lambda a, b: ref_nt_xent(a, b, t), [z1, z2], t, two_n)
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("backend", BACKENDS)
def test_nt_xent_grad_output_scale_and_all_equal_values(backend):
    z1, z2 = make_views(34, 5, "random", seed=1)
    check(lambda a, b: nt_xent(a, b, 0.1, backend), lambda a, b: ref_nt_xent(a, b, 0.1), [z1, z2], 0.1, 34, scale=-2.5)
    z1, z2 = make_views(18, 64, "all_equal")
    loss = nt_xent(z1, z2, 0.01, backend)
    assert loss.item() == pytest.approx(torch.log(torch.tensor(17.0)).item(), abs=loss_tol(0.01))


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("backend", BACKENDS)
def test_nt_xent_accepts_non_contiguous_views(backend):
    g = torch.Generator().manual_seed(2)
    base1 = torch.randn(5, 17, generator=g, requires_grad=True)
    base2 = torch.randn(17, 10, generator=g, requires_grad=True)
    z1, z2 = base1.T, base2[:, ::2]
    assert not z1.is_contiguous() and not z2.is_contiguous()
    loss = nt_xent(z1, z2, 0.2, backend)
    grads = torch.autograd.grad(loss, [base1, base2])
    ref_bases = [base1.detach().double().requires_grad_(), base2.detach().double().requires_grad_()]
    ref = ref_nt_xent(ref_bases[0].T, ref_bases[1][:, ::2], 0.2)
    ref_grads = torch.autograd.grad(ref, ref_bases)
    assert abs(loss.item() - ref.item()) <= loss_tol(0.2)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad.double(), ref_grad, rtol=0, atol=1e-6)
    assert torch.all(grads[1][:, 1::2] == 0)


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("two_n", "d", "row_offset", "rows", "t"),
    [(18, 5, 0, 1, 0.1), (34, 64, 5, 7, 0.05), (130, 130, 64, 1, 0.5), (256, 1, 100, 28, 0.01)],
)
def test_nt_xent_row_block_is_the_slice_of_the_reference(backend, two_n, d, row_offset, rows, t):
    z1, z2 = make_views(two_n, d, "random", seed=3)
    check(
        lambda a, b: nt_xent(a, b, t, backend, row_offset=row_offset, rows=rows),
        lambda a, b: ref_nt_xent(a, b, t, row_offset, rows),
        [z1, z2],
        t,
        2 * rows,
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_nt_xent_row_blocks_average_to_the_full_loss(backend):
    z1, z2 = make_views(34, 5, "random", seed=4)
    blocks = [nt_xent(z1, z2, 0.1, backend, row_offset=o, rows=r) for o, r in [(0, 6), (6, 6), (12, 5)]]
    full = nt_xent(z1, z2, 0.1, backend)
    assert (blocks[0] * 6 + blocks[1] * 6 + blocks[2] * 5).item() / 17 == pytest.approx(full.item(), abs=1e-5)


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("n", "m", "d", "row_offset", "t"), [(1, 1, 1, 0, 1.0), (9, 33, 5, 24, 0.1), (65, 130, 130, 3, 0.01)]
)
def test_info_nce_matches_float64_reference(backend, n, m, d, row_offset, t):
    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(n, d, generator=g), torch.randn(m, d, generator=g)
    check(
        lambda a, b: info_nce(a, b, t, backend, row_offset),
        lambda a, b: ref_info_nce(a, b, t, row_offset),
        [q, k],
        t,
        n,
        scale=0.5,
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs(backend, dtype):
    z1, z2 = make_views(34, 64, "random", seed=6)
    z1, z2 = z1.to(dtype).requires_grad_(), z2.to(dtype).requires_grad_()
    loss = nt_xent(z1, z2, 0.1, backend)
    loss.backward()
    ref = ref_nt_xent(z1.detach().float(), z2.detach().float(), 0.1)
    assert loss.dtype == torch.float32 and z1.grad.dtype == dtype
    assert abs(loss.item() - ref.item()) < 0.05
    ref_z = [z1.detach().double().requires_grad_(), z2.detach().double().requires_grad_()]
    ref_grads = torch.autograd.grad(ref_nt_xent(*ref_z, 0.1), ref_z)
    for grad, ref_grad in zip([z1.grad, z2.grad], ref_grads, strict=True):
        assert (grad.double() - ref_grad).abs().max() < 0.05 * ref_grad.abs().max()


def test_unknown_backend_names_the_choices():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="choose one of: auto, triton, chunked, naive"):
        nt_xent(z, z, 0.1, "fused")
    with pytest.raises(ValueError, match="unknown loss backend 'chunkd' \\(did you mean 'chunked'\\?\\)"):
        info_nce(z, z, 0.1, "chunkd")


def test_triton_without_a_gpu_or_interpreter_is_a_user_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    z = torch.randn(4, 3)
    expected = "loss backend 'triton' cannot run: .*" if triton_import_error() else "inputs are on cpu.*"
    with pytest.raises(ValueError, match=expected + "choose one of: auto, chunked, naive"):
        nt_xent(z, z, 0.1, "triton")


def test_triton_not_installed_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)
    triton_import_error.cache_clear()
    try:
        with pytest.raises(ValueError, match="triton is not installed .*; choose one of: auto, chunked, naive"):
            resolve_backend("triton", torch.device("cuda"))
        assert resolve_backend("auto", torch.device("cuda")) == "chunked"
    finally:
        triton_import_error.cache_clear()


def test_auto_on_cpu_is_chunked_and_never_imports_triton():
    code = (
        "import sys, torch; from sslrun.losses import nt_xent, resolve_backend; "
        "z = torch.randn(8, 4, requires_grad=True); nt_xent(z, z.flip(0), 0.1).backward(); "
        "assert resolve_backend('auto', z.device) == 'chunked'; assert 'triton' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"PATH": "", "TRITON_INTERPRET": "1"})


def test_backend_names_and_bad_arguments():
    assert NT_XENT_BACKENDS == ("auto", "triton", "chunked", "naive")
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        nt_xent(z, z, 0.0)
    with pytest.raises(ValueError, match="row block"):
        nt_xent(z, z, 0.1, row_offset=3, rows=2)
    with pytest.raises(ValueError, match="must both be"):
        nt_xent(z, z[:3], 0.1)


def test_tolerance_catches_a_wrong_gradient():
    """The gradient tolerance is tight enough that a 1% error in the gradient fails it (the checks can fail)."""
    z1, z2 = make_views(130, 64, "random", seed=7)
    ref_z = [z1.double().requires_grad_(), z2.double().requires_grad_()]
    ref_grad = torch.autograd.grad(ref_nt_xent(*ref_z, 0.1), ref_z)[0]
    assert not torch.all((0.01 * ref_grad).abs() <= grad_tol(0.1, 130, z1, 1.0))


@pytest.mark.skipif(triton_import_error() is not None, reason="triton is not installed")
def test_auto_picks_triton_for_cuda_tensors():
    assert resolve_backend("auto", torch.device("cuda")) == "triton"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["identical", "random"])
def test_autocast_does_not_lower_the_logits_precision(backend, kind):
    """Under bf16 autocast (the CPU default trainer) fp32 embeddings keep fp32 logits: autocast would run the
    logits' matmul in bf16 while the positive term stays fp32 (identical views at t = 0.1 gave 0.000 for 0.034)."""
    z1, z2 = make_views(256, 128, kind)
    for loss, ref, count in [(nt_xent, ref_nt_xent, 256), (info_nce, ref_info_nce, 128)]:
        loss_fn = autocast_forward(lambda a, b, loss=loss: loss(a, b, 0.1, backend))
        check(loss_fn, lambda a, b, ref=ref: ref(a, b, 0.1), [z1, z2], 0.1, count)


def test_tf32_is_off_inside_the_pytorch_backends_on_cuda():
    """naive and chunked run their fp32 matmuls at "highest" on CUDA (TF32 logits are off by up to ~7e-2 at
    t = 0.01), restore the user's setting after, and leave CPU alone."""
    from sslrun.losses.chunked import ieee_fp32_matmuls

    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        with ieee_fp32_matmuls(torch.device("cuda")):
            assert torch.get_float32_matmul_precision() == "highest"
        assert torch.get_float32_matmul_precision() == "high"
        with ieee_fp32_matmuls(torch.device("cpu")):
            assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(previous)
