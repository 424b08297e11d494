"""Every method's arithmetic pinned: on a fixed batch and seed, its SSL loss (and a two-player method's second loss),
the features it hands the probe, its gradient and its checkpoint layout equal the values recorded in
``golden.json`` (to 1e-6). A refactor that changes a method's numbers or its state_dict keys fails here; a change
meant to alter them re-records the file with ``SSLRUN_WRITE_GOLDEN=1 pytest tests/methods/test_golden.py``."""

import json
import os
from pathlib import Path

import pytest
import torch

from helpers.methods import build, fixed_views
from sslrun.methods import METHODS

GOLDEN = Path(__file__).with_name("golden.json")


def measure(name: str) -> dict:
    torch.manual_seed(0)
    model = build(name)
    views = fixed_views(model, n=16)
    torch.manual_seed(1)
    loss, feats = model.ssl_step(views)
    loss.backward()
    grad = sum(p.grad.double().square().sum() for p in model.parameters() if p.grad is not None)
    out = {
        "loss": loss.item(),
        "feats_sum": feats.double().sum().item(),
        "grad_sq": grad.item(),
        "state_keys": sorted(model.state_dict()),
    }
    if hasattr(model, "second_player_loss"):
        out["second_loss"] = model.second_player_loss(views).item()
    return out


@pytest.mark.parametrize("name", METHODS.names())
def test_method_numbers_match_the_recorded_ones(name):
    got = measure(name)
    if os.environ.get("SSLRUN_WRITE_GOLDEN"):
        recorded = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        recorded[name] = got
        GOLDEN.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
        return
    want = json.loads(GOLDEN.read_text())[name]
    assert got["state_keys"] == want["state_keys"]
    for key in sorted(set(want) - {"state_keys"}):
        assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-6), key
