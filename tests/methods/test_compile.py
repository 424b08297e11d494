"""trainer.compile=true: the compiled backbone (and EMA teacher) gives the eager step's loss and gradients, and
keeps the eager state-dict keys (checkpoints and exports do not change)."""

import copy

import pytest
import torch

from helpers.methods import build, fixed_views
from sslrun.trainer import compile_for_training


@pytest.mark.slow
@pytest.mark.parametrize("name", ["contrastive", "byol"])
def test_a_compiled_step_equals_the_eager_one(name):
    torch.manual_seed(0)
    eager = build(name)
    compiled = copy.deepcopy(eager)
    names = compile_for_training(compiled)
    assert "backbone" in names and (name != "byol" or any(n.startswith("teacher_backbone") for n in names))
    assert all(getattr(compiled, n)._compiled_call_impl is not None for n in names)  # compiled, not eager twice
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    views = fixed_views(eager, n=16)
    results = []
    for model in (eager, compiled):
        model.train()
        model.zero_grad()
        loss, _ = model.ssl_step(views)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss_e, grads_e), (loss_c, grads_c) = results
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-4, atol=1e-5)
    assert grads_c.keys() == grads_e.keys() and any(n.startswith("backbone.") for n in grads_e)
    for key, grad in grads_e.items():
        torch.testing.assert_close(grads_c[key], grad, rtol=1e-3, atol=1e-5, msg=lambda m, k=key: f"{k}: {m}")
