"""Joint-embedding losses against independent, explicit float64 references written from the papers' definitions."""

import math

import pytest
import torch

from sslrun.losses.joint import (
    barlow_twins,
    byol,
    dino,
    moco,
    nearest_neighbour,
    negative_cosine,
    sinkhorn,
    swav,
    vicreg,
)

SHAPES = [(4, 3), (16, 8), (33, 5)]


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def close(actual, expected, rtol=1e-4, atol=1e-6):
    torch.testing.assert_close(actual.detach().double(), expected.detach().double(), rtol=rtol, atol=atol)


def check(fn, ref, args, grad=(), rtol=1e-4, atol=1e-6):
    """fn on float32 copies vs ref on float64 copies: the () float32 value, and the gradients of args[grad]."""
    a32 = [x.detach().float().requires_grad_(i in grad) for i, x in enumerate(args)]
    a64 = [x.detach().clone().double().requires_grad_(i in grad) for i, x in enumerate(args)]
    out, exp = fn(*a32), ref(*a64)
    assert out.shape == () and out.dtype == torch.float32
    close(out, exp, rtol, atol)
    if grad:
        out.backward()
        exp.backward()
        for i in grad:  # an input the loss does not use (a crop with no other crop's code) gets no gradient in both
            assert (a32[i].grad is None) == (a64[i].grad is None)
            if a32[i].grad is not None:
                close(a32[i].grad, a64[i].grad, rtol, atol)
    return a32


def crops_fn(f, crops, *extra):
    """f(per-crop list, targets list, *extra) as a function of the flat tensors, for check."""
    return lambda *t: f(list(t[:crops]), list(t[crops:]), *extra)


# ----- float64 references, written out explicitly -----
def ref_cos(a, b):
    return torch.stack([a[i].dot(b[i]) / (a[i].dot(a[i]) * b[i].dot(b[i])).sqrt() for i in range(len(a))])


def ref_log_softmax(x):  # row-wise, x (B, K)
    return torch.stack([row - row.max() - torch.log(torch.exp(row - row.max()).sum()) for row in x])


def ref_barlow(z1, z2, lambd):
    n, d = z1.shape

    def bn(z):
        mu = z.sum(dim=0) / n
        var = ((z - mu) ** 2).sum(dim=0) / n
        return (z - mu) / torch.sqrt(var + 1e-5)

    a, b = bn(z1), bn(z2)
    loss = z1.new_zeros(())
    for i in range(d):
        for j in range(d):
            c = (a[:, i] * b[:, j]).sum() / n
            loss = loss + ((1 - c) ** 2 if i == j else lambd * c**2)
    return loss


def ref_vicreg(z1, z2, sim, var, cov):
    n, d = z1.shape
    inv = ((z1 - z2) ** 2).sum() / (n * d)
    variance, covariance = 0.0, 0.0
    for z in (z1, z2):
        z = z - z.sum(dim=0) / n
        std = torch.sqrt((z**2).sum(dim=0) / (n - 1) + 1e-4)
        variance = variance + torch.clamp(1 - std, min=0).sum() / d / 2
        for i in range(d):
            for j in range(d):
                if i != j:
                    covariance = covariance + ((z[:, i] * z[:, j]).sum() / (n - 1)) ** 2 / d
    return sim * inv + var * variance + cov * covariance


def ref_sinkhorn(scores, eps, iterations):
    q = torch.exp(scores.double() / eps).T.clone()  # (K, B)
    k, b = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        for r in range(k):
            q[r] = q[r] / q[r].sum() / k
        for c in range(b):
            q[:, c] = q[:, c] / q[:, c].sum() / b
    return (q * b).T


def ref_cross(q, logits):  # -mean_b sum_k q log_softmax(logits)
    return -(q * ref_log_softmax(logits)).sum(dim=1).mean()


def ref_swav(scores, codes, t):
    v = len(scores)
    per_code = [sum(ref_cross(q, scores[j] / t) for j in range(v) if j != i) / (v - 1) for i, q in enumerate(codes)]
    return sum(per_code) / len(codes)


def ref_dino(student, teacher, center, ts, tt):
    terms = []
    for i, t in enumerate(teacher):
        q = torch.exp(ref_log_softmax((t - center.reshape(1, -1)) / tt))
        terms += [ref_cross(q, s / ts) for v, s in enumerate(student) if v != i]
    return sum(terms) / len(terms)


def ref_moco(q, k, queue, t):
    q, k, queue = ([row / row.dot(row).sqrt() for row in x] for x in (q, k, queue))
    losses = []
    for i in range(len(q)):
        logits = torch.stack([q[i].dot(k[i])] + [q[i].dot(m) for m in queue]) / t
        losses.append(-logits[0] + torch.log(torch.exp(logits).sum()))  # cross-entropy, positive at index 0
    return sum(losses) / len(losses)


# ----- tests -----
@pytest.mark.parametrize(("n", "d"), SHAPES)
def test_byol_and_negative_cosine_match_reference_with_stop_gradient(n, d):
    p, z = rand(n, d, seed=1), rand(n, d, seed=2)
    check(byol, lambda p, z: (2 - 2 * ref_cos(p, z)).mean(), [p, z], grad=(0,))
    check(negative_cosine, lambda p, z: -ref_cos(p, z).mean(), [p, z], grad=(0,))
    for fn in (byol, negative_cosine):
        p32, z32 = p.float().requires_grad_(), z.float().requires_grad_()
        fn(p32, z32).backward()
        assert z32.grad is None and torch.isfinite(p32.grad).all() and p32.grad.abs().sum() > 0
    # scale invariance and the identity byol = 2 + 2 * negative_cosine
    close(byol(3 * p.float(), 0.1 * z.float()), 2 + 2 * negative_cosine(p.float(), z.float()))
    close(byol(p.float(), p.float()), torch.tensor(0.0), atol=1e-6)


@pytest.mark.parametrize(("n", "d"), SHAPES)
@pytest.mark.parametrize("lambd", [5e-3, 0.5])
def test_barlow_twins_matches_reference(n, d, lambd):
    shift = rand(1, d, seed=5) * 3  # non-zero column means and scales
    z1, z2 = rand(n, d, seed=3) * 2 + shift, rand(n, d, seed=4) + shift
    check(lambda a, b: barlow_twins(a, b, lambd), lambda a, b: ref_barlow(a, b, lambd), [z1, z2], grad=(0, 1))


def test_barlow_twins_identical_inputs_without_redundancy_term_is_zero():
    z = rand(16, 8, seed=6) * 5 + 2
    assert barlow_twins(z.float(), z.float(), lambd=0.0).item() == pytest.approx(0.0, abs=1e-6)
    assert barlow_twins(z.float(), rand(16, 8, seed=7).float(), lambd=0.0).item() > 1.0


@pytest.mark.parametrize(("n", "d"), SHAPES)
@pytest.mark.parametrize("weights", [(25.0, 25.0, 1.0), (1.0, 3.0, 0.5)])
def test_vicreg_matches_reference(n, d, weights):
    z1, z2 = rand(n, d, seed=8) * 0.7, rand(n, d, seed=9) * 1.5 + 1  # some dimensions below std 1, some above
    a = check(lambda a, b: vicreg(a, b, *weights), lambda a, b: ref_vicreg(a, b, *weights), [z1, z2], grad=(0, 1))
    assert all(torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0 for x in a)


def test_vicreg_zero_for_identical_decorrelated_wide_embeddings():
    h = torch.ones(1, 1)
    for _ in range(3):
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)  # 8x8 Sylvester-Hadamard
    z = h[:, 1:5] * 1.0  # zero-mean, orthogonal columns with unbiased std sqrt(8/7) > 1
    assert vicreg(z, z).item() == pytest.approx(0.0, abs=1e-6)
    assert vicreg(0.5 * z, 0.5 * z).item() > 1.0  # std < 1 is penalised


@pytest.mark.parametrize(("b", "k"), [(16, 8), (7, 3), (32, 64)])
@pytest.mark.parametrize("iterations", [1, 3])
def test_sinkhorn_matches_reference_and_normalises(b, k, iterations):
    x, protos = rand(b, 4, seed=10), rand(k, 4, seed=11)
    scores = (x / x.norm(dim=1, keepdim=True)) @ (protos / protos.norm(dim=1, keepdim=True)).T  # cosines, as SwAV
    ref = ref_sinkhorn(scores, 0.05, iterations)
    q = sinkhorn(scores.float().requires_grad_(), 0.05, iterations)
    assert q.shape == (b, k) and q.dtype == torch.float32 and not q.requires_grad
    close(q, ref, rtol=1e-4, atol=1e-6)
    close(q.sum(dim=1), torch.ones(b, dtype=torch.float64))
    close(sinkhorn(scores.float() + 30.0, 0.05, iterations), ref)  # the max shift cancels (exp(600) overflows fp32)
    many = sinkhorn(scores.float(), 0.05, 300)
    close(many.sum(dim=0), torch.full((k,), b / k, dtype=torch.float64), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("scale", [10.0, 100.0])
def test_sinkhorn_large_scores_stay_finite(scale):
    assert torch.isfinite(sinkhorn(rand(16, 8, seed=13).float() * scale)).all()


@pytest.mark.parametrize("crops", [2, 3, 4])
@pytest.mark.parametrize("n_codes", [1, 2])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_swav_matches_reference(crops, n_codes, temperature):
    b, k = 6, 5
    scores = [rand(b, k, seed=20 + v) for v in range(crops)]
    codes = [torch.softmax(rand(b, k, seed=30 + i) * 3, dim=1) for i in range(n_codes)]
    check(crops_fn(swav, crops, temperature), crops_fn(ref_swav, crops, temperature), scores + codes, range(crops))


def test_swav_confident_correct_prediction_is_near_zero_and_errors():
    hot = torch.eye(4)
    other = rand(4, 4, seed=14).float()
    assert swav([other, 10 * hot], [hot]).item() == pytest.approx(0.0, abs=1e-6)  # crop 0 never predicts its own code
    assert swav([other, 10 * hot.flip(0)], [hot]).item() > 10
    for crops, codes in (([hot], [hot]), ([hot, hot], []), ([hot, hot], [hot, hot, hot])):
        with pytest.raises(ValueError):
            swav(crops, codes)


@pytest.mark.parametrize(("crops", "n_teacher"), [(2, 1), (2, 2), (3, 2), (5, 2)])
@pytest.mark.parametrize("center_shape", ["k", "1k"])
def test_dino_matches_reference_and_stops_teacher_gradient(crops, n_teacher, center_shape):
    b, k = 5, 7
    student = [rand(b, k, seed=40 + v) for v in range(crops)]
    teacher = [rand(b, k, seed=50 + i) for i in range(n_teacher)]
    center = rand(k, seed=60) * 0.3
    center = center if center_shape == "k" else center.reshape(1, k)
    fn, ref = crops_fn(dino, crops, center.float(), 0.1, 0.04), crops_fn(ref_dino, crops, center, 0.1, 0.04)
    check(fn, ref, student + teacher, grad=range(crops))
    s32, t32 = [s.float().requires_grad_() for s in student], [t.float().requires_grad_() for t in teacher]
    dino(s32, t32, center.float()).backward()
    assert all(t.grad is None for t in t32) and all(s.grad is not None for s in s32[1:])


def test_dino_uniform_student_gives_log_k_and_errors():
    t = [rand(3, 6, seed=15).float(), rand(3, 6, seed=16).float()]
    assert dino([torch.zeros(3, 6)] * 3, t, torch.zeros(6)).item() == pytest.approx(math.log(6), rel=1e-5)
    with pytest.raises(ValueError):
        dino([torch.zeros(3, 6)] * 2, [], torch.zeros(6))
    with pytest.raises(ValueError):
        dino([torch.zeros(3, 6)], t[:1], torch.zeros(6))


@pytest.mark.parametrize(("n", "d", "m"), [(4, 3, 5), (16, 8, 32), (9, 16, 1)])
@pytest.mark.parametrize("temperature", [0.07, 0.2, 1.0])
def test_moco_matches_reference_with_stop_gradient(n, d, m, temperature):
    args = [rand(n, d, seed=70), rand(n, d, seed=71), rand(m, d, seed=72)]
    check(lambda *a: moco(*a, temperature), lambda *a: ref_moco(*a, temperature), args, grad=(0,))
    q, k, queue = (x.float().requires_grad_() for x in args)
    loss = moco(q, k, queue, temperature)
    loss.backward()
    assert k.grad is None and queue.grad is None and q.grad is not None
    close(moco(2 * q, 0.1 * k, 5 * queue, temperature), loss)  # rows are normalised


@pytest.mark.parametrize(("n", "m", "d"), [(4, 6, 3), (16, 40, 8)])
def test_nearest_neighbour_matches_reference(n, m, d):
    z, support = rand(n, d, seed=80), rand(m, d, seed=81)
    unit = support / support.norm(dim=1, keepdim=True)
    ref = torch.stack(
        [unit[max(range(m), key=lambda j: ref_cos(z[i : i + 1], support[j : j + 1]).item())] for i in range(n)]
    )
    out = nearest_neighbour(z.float().requires_grad_(), support.float().requires_grad_())
    assert not out.requires_grad
    close(out, ref)
    close(nearest_neighbour(3 * support[[2, 0, 5 % m]].float(), support.float()), unit[[2, 0, 5 % m]])


@pytest.mark.parametrize("fn", [byol, negative_cosine, barlow_twins, vicreg, lambda a, b: moco(a, b, a)])
def test_pair_losses_reject_mismatched_shapes(fn):
    for a, b in (((4, 3), (4, 5)), ((4, 3), (5, 3)), ((4,), (4,)), ((2, 4, 3), (2, 4, 3))):
        with pytest.raises(ValueError):
            fn(torch.ones(a), torch.ones(b))
