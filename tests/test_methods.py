"""Every registered method builds, trains, and lowers its loss on a fixed batch."""

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from sslrun.config import validate
from sslrun.methods import METHODS
from sslrun.pretrain import schema


def method_config(name: str) -> dict:
    GlobalHydra.instance().clear()
    overrides = [f"method={name}", "backbone=convnet", "backbone.width=0.25", "trainer=debug", "optim=sgd"]
    with initialize_config_module("sslrun.configs", version_base="1.3"):
        cfg = compose("pretrain", overrides=overrides)
    return OmegaConf.to_container(validate(cfg, schema(cfg)), resolve=True)


@pytest.mark.parametrize("name", METHODS.names())
def test_loss_decreases_on_a_fixed_batch(name):
    torch.manual_seed(0)
    model = METHODS.get(name)(method_config(name), in_channels=1, image_size=16, num_classes=10)
    view1, view2 = torch.randn(32, 1, 16, 16), torch.randn(32, 1, 16, 16)
    view2 = 0.5 * view1 + 0.5 * view2
    labels = torch.randint(0, 10, (32,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = model.training_step(((view1, view2), labels), 0)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(map(lambda v: v == v, losses)), losses
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize("name", METHODS.names())
def test_probe_gets_no_gradient_into_the_backbone(name):
    model = METHODS.get(name)(method_config(name), in_channels=1, image_size=16, num_classes=10)
    feats = model.backbone(torch.randn(8, 1, 16, 16))
    loss, _ = model.probe.loss(feats, torch.randint(0, 10, (8,)))
    loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.probe.head.weight.grad is not None
