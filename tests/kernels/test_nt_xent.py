"""Triton NT-Xent / InfoNCE kernels through the CPU interpreter (TRITON_INTERPRET=1, set by conftest.py), fp32,
against the float64 reference, at the interpreter's small tiles and at the tiles a GPU launch uses. Shapes are small
and not multiples of the tiles, so masked tails run; D = 130 and 300 take the chunked-D backward at the small and
the GPU tiles, the other D the resident one."""

import pytest
import torch

from helpers.contrastive_reference import autocast_forward, check, loss_tol, make_views, ref_info_nce, ref_nt_xent

pytest.importorskip("triton")

from sslrun.kernels import triton_interpreting  # noqa: E402

pytestmark = pytest.mark.skipif(not triton_interpreting(), reason="CPU tensors need TRITON_INTERPRET=1")

from sslrun.kernels.emulation import emulated_nt_xent  # noqa: E402
from sslrun.kernels.nt_xent import (  # noqa: E402
    GPU_TILES,
    INTERPRETER_TILES,
    configured,
    default_precision,
    lse_triton,
    plan,
)
from sslrun.losses import info_nce, nt_xent  # noqa: E402

TILES = {"interpreter_tiles": INTERPRETER_TILES, "gpu_tiles": GPU_TILES}

# (2N, D, temperature, kind): every 2N in {2, 18, 34, 130, 256} and D in {1, 5, 64, 130, 300}.
CASES = [
    (2, 130, 0.5, "random"),
    (18, 1, 0.01, "identical"),
    (34, 5, 1.0, "random"),
    (34, 64, 0.01, "all_equal"),
    (130, 130, 0.01, "identical"),
    (130, 300, 0.1, "random"),
    (256, 5, 0.05, "random"),
]


@pytest.mark.parametrize("tiles", TILES)
@pytest.mark.parametrize(("two_n", "d", "t", "kind"), CASES)
def test_triton_nt_xent_matches_float64_reference(two_n, d, t, kind, tiles):
    z1, z2 = make_views(two_n, d, kind)
    with configured(TILES[tiles]):
        loss, grads = check(
            lambda a, b: nt_xent(a, b, t, "triton"), lambda a, b: ref_nt_xent(a, b, t), [z1, z2], t, two_n, scale=1.7
        )
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.slow
@pytest.mark.parametrize(("two_n", "d", "t"), [(256, 130, 0.01), (256, 64, 0.1)])
def test_triton_nt_xent_largest_shapes(two_n, d, t):
    z1, z2 = make_views(two_n, d, "random")
    check(lambda a, b: nt_xent(a, b, t, "triton"), lambda a, b: ref_nt_xent(a, b, t), [z1, z2], t, two_n)


@pytest.mark.parametrize("tiles", TILES)
@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize(("two_n", "d", "row_offset", "rows", "t"), [(34, 130, 3, 7, 0.1), (260, 5, 40, 60, 0.01)])
def test_triton_row_block_uses_the_column_pass(two_n, d, row_offset, rows, t, splits, tiles):
    z1, z2 = make_views(two_n, d, "random", seed=3)
    with configured(TILES[tiles], splits=splits):
        check(
            lambda a, b: nt_xent(a, b, t, "triton", row_offset=row_offset, rows=rows),
            lambda a, b: ref_nt_xent(a, b, t, row_offset, rows),
            [z1, z2],
            t,
            2 * rows,
            scale=-0.3,
        )


@pytest.mark.parametrize("tiles", TILES)
@pytest.mark.parametrize(("n", "m", "d", "row_offset", "t"), [(1, 1, 1, 0, 1.0), (33, 140, 300, 37, 0.02)])
def test_triton_info_nce_matches_float64_reference(n, m, d, row_offset, t, tiles):
    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(n, d, generator=g), torch.randn(m, d, generator=g)
    with configured(TILES[tiles], splits=2):
        check(
            lambda a, b: info_nce(a, b, t, "triton", row_offset),
            lambda a, b: ref_info_nce(a, b, t, row_offset),
            [q, k],
            t,
            n,
            scale=2.0,
        )


@pytest.mark.parametrize("tiles", TILES)
def test_column_splits_merge_to_the_unsplit_result(tiles):
    """Splitting the columns over more programs (partial max/sum merged; partial gradients summed) changes only
    the fp32 rounding, for the symmetric form and for the row-block form's two backward passes."""
    z = torch.nn.functional.normalize(torch.randn(300, 40, generator=torch.Generator().manual_seed(1)), dim=1)
    g = torch.linspace(-1, 1, 300)
    results = []
    for splits in (1, 2, 5):
        q = z.clone().requires_grad_()
        with configured(TILES[tiles], splits=splits):
            lse = lse_triton(q, None, torch.arange(300), 10.0)
            lse.backward(g)
            rows = q.detach()[:70].clone().requires_grad_()
            cols = q.detach().clone().requires_grad_()
            lse2 = lse_triton(rows, cols, torch.arange(70) + 5, 10.0)
            lse2.backward(g[:70])
        results.append([lse, q.grad, lse2, rows.grad, cols.grad])
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=2e-5)


def test_the_split_rule_fills_the_gpu_and_leaves_large_problems_alone():
    """Column splits: about `programs` programs in all, never more splits than column tiles, none at large 2N."""
    small = plan(256, 256, 128, 4, torch.device("cpu"), GPU_TILES, programs=264)
    assert small.owner_blocks == 4 and small.splits == 4 and small.tiles_per_split == 1  # 16 programs, 4 col tiles
    mid = plan(4096, 4096, 128, 4, torch.device("cpu"), GPU_TILES, programs=264)
    assert mid.owner_blocks == 64 and mid.splits * mid.owner_blocks >= 264 and mid.splits <= 64
    large = plan(65536, 65536, 128, 4, torch.device("cpu"), GPU_TILES, programs=264)
    assert large.splits == 1
    buffer = plan(1024, 65536, 2048, 4, torch.device("cpu"), GPU_TILES, programs=264, buffer_row_bytes=4 * 2048)
    assert buffer.splits * 1024 * 4 * 2048 <= 256 * 2**20  # the backward's partial-gradient buffer stays capped
    assert plan(64, 64, 300, 4, torch.device("cpu"), GPU_TILES).resident is False
    assert plan(64, 64, 256, 2, torch.device("cpu"), GPU_TILES).resident is True


def _counted(fn, *inputs, tiles=GPU_TILES):
    """Multiply-adds counted by the kernels themselves: (forward logits, backward logits, backward weights)."""
    counter = torch.zeros(4, dtype=torch.int64)
    with configured(tiles, counter=counter):
        out = fn(*inputs)
        forward = counter.clone()
        out.backward()
    return forward[0].item(), counter[2].item(), counter[3].item()


@pytest.mark.parametrize("d", [2048, 256])
def test_backward_computes_each_logit_tile_at_most_twice(d):
    """At D = 2048 (chunked D) and D = 256 (resident) with the GPU tiles, counted in multiply-adds (MACs) of the
    R x M x D logit matrix (shapes are tile multiples, so padding adds none): the forward computes it once; the
    symmetric backward once more and applies the weights once (4 (2N)^2 D FLOPs, the minimum); the row-block (DDP)
    form's backward twice (row pass + column pass), with two weight products."""
    z1, z2 = make_views(256, d, "random")
    leaves = [z1.requires_grad_(), z2.requires_grad_()]
    logits = 256 * 256 * d
    assert _counted(lambda a, b: nt_xent(a, b, 0.1, "triton"), *leaves) == (logits, logits, logits)
    block = 64 * 256 * d  # rows [16, 48) of each view: 64 rows against all 256 columns
    counted = _counted(lambda a, b: nt_xent(a, b, 0.1, "triton", row_offset=16, rows=32), *leaves)
    assert counted == (block, 2 * block, 2 * block)


def test_keys_without_gradient_skip_the_column_pass():
    """MoCo-style keys (no grad): only the row pass runs, the logits are recomputed once, and k gets None."""
    g = torch.Generator().manual_seed(4)
    q = torch.randn(64, 32, generator=g, requires_grad=True)
    k = torch.randn(192, 32, generator=g)
    assert _counted(lambda a, b: info_nce(a, b, 0.2, "triton"), q, k) == (64 * 192 * 32,) * 3
    k.requires_grad_()
    assert _counted(lambda a, b: info_nce(a, b, 0.2, "triton"), q, k) == (64 * 192 * 32,) + (2 * 64 * 192 * 32,) * 2
    assert k.grad is not None and k.grad.abs().sum() > 0


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


@pytest.mark.parametrize("precision", ["ieee", "tf32x3"])
def test_strided_kernel_inputs_and_named_precisions(precision):
    """A transposed (R, D) view gives the same LSE and gradient as the float64 formula (the interpreter computes
    every precision in IEEE fp32; the TF32 paths are checked by emulation below and by the CUDA tests)."""
    g = torch.Generator().manual_seed(8)
    base = torch.randn(40, 19, generator=g)
    q = (base / base.norm(dim=0)).requires_grad_()
    self_cols = torch.arange(19)
    lse = lse_triton(q.T, None, self_cols, 4.0, input_precision=precision)
    lse.backward(torch.linspace(-1, 1, 19))
    ref_q = q.detach().T.double().requires_grad_()
    logits = (4.0 * ref_q @ ref_q.T).masked_fill(torch.eye(19, dtype=torch.bool), float("-inf"))
    ref = torch.logsumexp(logits, dim=1)
    ref.backward(torch.linspace(-1, 1, 19, dtype=torch.float64))
    torch.testing.assert_close(lse.double(), ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(q.grad.T.double(), ref_q.grad, rtol=0, atol=1e-5)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="input_precision must be one of ieee, tf32x3, tf32"):
        lse_triton(torch.randn(4, 3), None, torch.arange(4), 1.0, input_precision="fp8")


@pytest.mark.parametrize("tiles", TILES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_half_precision_inputs(dtype, tiles):
    z1, z2 = make_views(34, 64, "random", seed=6)
    z1, z2 = z1.to(dtype).requires_grad_(), z2.to(dtype).requires_grad_()
    with configured(TILES[tiles]):
        loss = nt_xent(z1, z2, 0.1, "triton")
        loss.backward()
    ref_z = [z1.detach().double().requires_grad_(), z2.detach().double().requires_grad_()]
    ref = ref_nt_xent(*ref_z, 0.1)
    assert loss.dtype == torch.float32 and z1.grad.dtype == dtype
    assert abs(loss.item() - ref.item()) < 0.05
    for grad, ref_grad in zip([z1.grad, z2.grad], torch.autograd.grad(ref, ref_z), strict=True):
        assert (grad.double() - ref_grad).abs().max() < 0.05 * ref_grad.abs().max()


def test_fp16_weights_are_scaled_into_range():
    """g = dL/dlse = 1/4096 (the mean over 2N = 4096 rows) on a 256-row problem: the weights P * g (about
    1/255/4096 = 1e-6) are fp16 subnormals with 4 significant bits and the gradient would be off by 0.7% of its
    largest entry (measured with the scaling removed); scaled by a power of two into fp16's normal range they keep
    it within 0.2% (0.07% measured)."""
    z = torch.nn.functional.normalize(torch.randn(256, 32, generator=torch.Generator().manual_seed(9)), dim=1)
    q = z.half().requires_grad_()
    with configured(GPU_TILES):
        lse_triton(q, None, torch.arange(256), 2.0).backward(torch.full((256,), 1 / 4096))
    ref_q = q.detach().double().requires_grad_()
    logits = (2.0 * ref_q @ ref_q.T).masked_fill(torch.eye(256, dtype=torch.bool), float("-inf"))
    torch.logsumexp(logits, dim=1).backward(torch.full((256,), 1 / 4096, dtype=torch.float64))
    assert (q.grad.double() - ref_q.grad).abs().max() < 2e-3 * ref_q.grad.abs().max()


def test_emulated_tf32_breaks_the_loss_and_the_chosen_tf32x3_keeps_it(monkeypatch):
    """At tau = 0.01 plain TF32 (emulated: sslrun.kernels.emulation) puts the loss off by ~7e-2 (below zero for
    identical views), 180x the tolerance; tf32x3, what the kernel picks when torch allows TF32, stays within it;
    "highest" keeps IEEE fp32. The float64 reference is the tests' own (contrastive_reference.py)."""
    for setting, expected in [("highest", "ieee"), ("high", "tf32x3"), ("medium", "tf32x3")]:
        monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda setting=setting: setting)
        assert default_precision() == expected
    t = 0.01
    for kind in ("identical", "random"):
        z1, z2 = make_views(256, 64, kind)
        ref = ref_nt_xent(z1, z2, t).item()
        errors = {p: abs(emulated_nt_xent(z1, z2, t, p).item() - ref) for p in ("ieee", "tf32", "tf32x3")}
        assert errors["tf32"] > 10 * loss_tol(t), errors
        assert errors["tf32x3"] <= loss_tol(t) and errors["ieee"] <= loss_tol(t), errors
    assert emulated_nt_xent(*make_views(256, 64, "identical"), t, "tf32").item() < 0  # a loss below its minimum


def test_autocast_does_not_lower_the_kernel_inputs():
    """Under bf16 autocast fp32 embeddings reach the kernel as fp32 (the loss disables autocast around itself)."""
    z1, z2 = make_views(130, 64, "identical")
    loss_fn = autocast_forward(lambda a, b: nt_xent(a, b, 0.1, "triton"))
    check(loss_fn, lambda a, b: ref_nt_xent(a, b, 0.1), [z1, z2], 0.1, 130)
