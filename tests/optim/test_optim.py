import dataclasses
import math

import pytest
import torch
from omegaconf import OmegaConf

from sslrun.config import OptimConfig
from sslrun.optim import OPTIMIZERS, build_optimizer, effective_lr, param_groups, warmup_cosine, warmup_steps


def optim_cfg(name: str, **kw) -> OptimConfig:
    return OmegaConf.merge(OmegaConf.structured(OPTIMIZERS.get(name).Config), {"name": name, **kw})


def test_warmup_then_cosine_to_min_ratio():
    f = warmup_cosine(warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(10, 120))


def test_auto_warmup_fits_the_run(caplog):
    assert warmup_steps("auto", steps_per_epoch=31, total_steps=248) == 24  # 8 epochs: 10% of the run
    assert warmup_steps("auto", steps_per_epoch=10, total_steps=10_000) == 100  # long run: 10 epochs
    assert warmup_steps("auto", steps_per_epoch=1, total_steps=50) == 5  # trainer.max_steps=50, one step per "epoch"
    assert warmup_steps(2, steps_per_epoch=31, total_steps=248) == 62
    assert warmup_steps(10, steps_per_epoch=31, total_steps=248) == 247  # an explicit value is kept, capped, and...
    assert "never reaches its peak" in caplog.text  # ...the log says so
    with pytest.raises(ValueError, match="optim.warmup_epochs"):
        warmup_steps("soon", steps_per_epoch=31, total_steps=248)


def test_linear_scaling_rule():
    assert effective_lr(optim_cfg("sgd", lr=0.3), 512) == pytest.approx(0.6)
    assert effective_lr(optim_cfg("sgd", lr=0.3, scale_lr=False), 512) == pytest.approx(0.3)
    assert effective_lr(optim_cfg("sgd", lr=0.3, scale_lr="none"), 512) == pytest.approx(0.3)
    assert effective_lr(optim_cfg("sgd", lr=0.3, scale_lr=True), 512) == pytest.approx(0.6)
    assert effective_lr(optim_cfg("lars", lr=1.2, scale_lr="sqrt"), 4096) == pytest.approx(0.075 * 64)  # SimCLR B.1


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_each_optimizer_yaml_carries_its_own_keys_only(name):
    """An optimizer's YAML and schema have the same keys, none of another optimizer's (adam: no momentum)."""
    from pathlib import Path

    import yaml

    path = Path(__file__).parents[2] / "sslrun" / "configs" / "optim" / f"{name}.yaml"
    keys = set(yaml.safe_load(path.read_text()))
    schema = {f.name for f in dataclasses.fields(OPTIMIZERS.get(name).Config)}
    assert keys == schema
    assert ("momentum" in keys) == (name in ("sgd", "lars")) and ("betas" in keys) == name.startswith("adam")


def test_bias_and_norm_parameters_get_no_weight_decay():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    decay, plain = param_groups(model, optim_cfg("lars"))
    assert [p.ndim for p in decay["params"]] == [2]
    assert plain["weight_decay"] == 0.0 and plain["lars_exclude"] and len(plain["params"]) == 3


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_reduces_a_quadratic(name):
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    cfg = optim_cfg(name, lr=0.05 if name != "lars" else 1.0, warmup_epochs=0, weight_decay=0.0, scale_lr=False)
    opt, sched = build_optimizer(param_groups(model, cfg), cfg, 64, steps_per_epoch=1, total_steps=200)
    first = torch.nn.functional.mse_loss(model(x), y).item()
    for _ in range(100):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
    assert loss.item() < 0.8 * first


def test_lars_step_is_trust_ratio_scaled():
    w = torch.nn.Parameter(torch.full((2, 2), 2.0))
    w.grad = torch.full((2, 2), 1.0)
    opt = OPTIMIZERS.build("lars", [{"params": [w]}], optim_cfg("lars", weight_decay=0.0, trust_coefficient=0.01), 1.0)
    opt.step()
    # trust = 0.01 * ||w|| / ||g|| = 0.01 * 4 / 2 = 0.02 -> w = 2 - 0.02
    torch.testing.assert_close(w.detach(), torch.full((2, 2), 1.98))


def test_the_schedule_of_a_two_player_method_spans_its_batches():
    """Under manual optimisation Lightning counts both players' steps in global_step: max_steps=10 is 5 batches,
    and the schedule (stepped once per batch) must end there."""
    from types import SimpleNamespace

    from sslrun.optim import lightning_optimizers

    def schedule_length(max_steps: int, steps_per_batch: int) -> int:
        trainer = SimpleNamespace(
            estimated_stepping_batches=max_steps if max_steps > 0 else 40,
            num_training_batches=20,
            accumulate_grad_batches=1,
            max_steps=max_steps,
            max_epochs=2,
            world_size=1,
            num_nodes=1,
        )
        cfg = optim_cfg("sgd", lr=1.0)
        cfg.warmup_epochs = 0
        groups = [{"params": [torch.nn.Parameter(torch.ones(1))]}]
        out = lightning_optimizers(trainer, groups, cfg, 256, steps_per_batch)
        factors = [out["lr_scheduler"]["scheduler"].lr_lambdas[0](step) for step in range(60)]
        return next(step for step, f in enumerate(factors) if f == 0.0)

    assert schedule_length(10, 2) == 5
    assert schedule_length(10, 1) == 10
    assert schedule_length(-1, 2) == 40  # no max_steps: epochs x batches
