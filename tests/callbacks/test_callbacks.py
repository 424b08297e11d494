"""Throughput's data-wait share and run ETA, the progress bar that shows them, and RankMe."""

from types import SimpleNamespace

import pytest
import torch

from sslrun.callbacks import throughput as throughput_module
from sslrun.callbacks.throughput import Throughput
from sslrun.eval.features import rankme

BATCH = (torch.zeros(4, 1), torch.zeros(4))


def started(steps: int) -> tuple[Throughput, SimpleNamespace, SimpleNamespace]:
    """A Throughput callback started on a stand-in trainer of ``steps`` optimizer steps, one per batch."""
    module = SimpleNamespace(log=lambda *a, **k: None)
    trainer = SimpleNamespace(
        world_size=1, global_step=0, estimated_stepping_batches=steps, max_steps=-1, lightning_module=module
    )
    cb = Throughput()
    cb.on_train_start(trainer, module)
    return cb, trainer, module


def test_data_share_and_eta_follow_the_step_timeline(monkeypatch):
    clock = iter([0.0, 1.0, 1.5, 3.0, 3.5, 5.5])  # fit start, end of batch 0, then (start, end) of batches 1 and 2
    monkeypatch.setattr(throughput_module.time, "perf_counter", lambda: next(clock))
    cb, trainer, module = started(10)
    batch = BATCH
    cb.on_train_epoch_start(trainer, module)
    for i in range(3):
        cb.on_train_batch_start(trainer, module, batch, i)
        cb.on_train_batch_end(trainer, module, None, batch, i)
        trainer.global_step += 1
    # steps 2 and 3 are timed (the first of an epoch is not): 2.0 + 2.5 s, of which 0.5 + 0.5 s waiting for data
    assert cb.seconds == pytest.approx(4.5) and cb.data_share == pytest.approx(1.0 / 4.5)
    assert cb.img_per_s == pytest.approx(8 / 4.5)
    monkeypatch.setattr(throughput_module.time, "perf_counter", lambda: 6.0)
    assert cb.eta_seconds(trainer) == pytest.approx(6.0 / 3 * 7)


def test_the_eta_follows_the_recent_pace(monkeypatch):
    """Once, the ETA averaged over the whole run and stayed wrong for long after the machine's load changed."""
    now = [0.0]
    monkeypatch.setattr(throughput_module.time, "perf_counter", lambda: now[0])
    cb, trainer, module = started(1000)
    for step in range(400):
        now[0] += 10.0 if step < 200 else 1.0  # a slow start, then ten times faster
        trainer.global_step += 1
        cb.on_train_batch_end(trainer, module, None, BATCH, step)
    assert cb.eta_seconds(trainer) == pytest.approx(600 * 1.0)  # 600 steps left at the recent 1 s a step


def test_rankme_counts_the_used_dimensions():
    torch.manual_seed(0)
    full = torch.randn(512, 8)
    collapsed = torch.randn(512, 1) @ torch.randn(1, 8)
    assert rankme(full) == pytest.approx(8, rel=0.1)
    assert rankme(collapsed) == pytest.approx(1, abs=0.01)


def test_precise_bn_recomputes_running_statistics_as_the_average_over_the_images():
    from sslrun.eval.features import precise_bn, uses_precise_bn

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4, momentum=0.01), torch.nn.Dropout(0.5))
    x = torch.randn(96, 1, 8, 8) * 3 + 2
    loader = [(x[i : i + 32], torch.zeros(32)) for i in range(0, 96, 32)]
    assert precise_bn(net, loader, torch.device("cpu"), max_images=64) == 64  # two batches of the three
    bn = net[1]
    with torch.no_grad():
        batches = [net[0](x[i : i + 32]) for i in (0, 32)]
    expected_mean = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches]).mean(0)
    expected_var = torch.stack([b.var(dim=(0, 2, 3), unbiased=True) for b in batches]).mean(0)
    torch.testing.assert_close(bn.running_mean, expected_mean)
    torch.testing.assert_close(bn.running_var, expected_var)
    assert bn.momentum == 0.01 and net.training  # restored
    assert precise_bn(torch.nn.Linear(2, 2), loader, torch.device("cpu")) == 0  # nothing to recompute
    assert uses_precise_bn("auto", "timm") and not uses_precise_bn("auto", "resnet18") and uses_precise_bn(True, "x")
