"""Every registered method builds, and its SSL loss itself (not a sum with the probe's) falls on a fixed batch; EMA
teachers follow the run's optimizer steps; queues and teachers live in the checkpoint; SimSiam and BYOL do not
collapse over a short run."""

from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import sslrun.methods.base as base
from helpers.methods import SIZE, Views, build, fixed_views, train_on_a_fixed_batch
from sslrun.methods import METHODS
from sslrun.methods.momentum import cosine_momentum


@pytest.mark.parametrize("name", METHODS.names())
def test_ssl_loss_itself_decreases_on_a_fixed_batch(name):
    torch.manual_seed(0)
    model = build(name)
    losses, feats = train_on_a_fixed_batch(model, fixed_views(model), steps=15)
    assert feats.shape == (32, model.backbone.feature_dim)
    assert all(v == v for v in losses), losses
    assert losses[-1] < losses[0] - 0.05 * max(1.0, abs(losses[0])), losses


@pytest.mark.parametrize("name", ["contrastive", "dino"])
def test_joint_embedding_methods_train_a_vit(name):
    """ViTs serve the joint-embedding family too; DINO's smaller local crops get resized position embeddings."""
    torch.manual_seed(0)
    model = build(name, "method.local_crops=2" if name == "dino" else "seed=0", backbone="vit_tiny")
    losses, feats = train_on_a_fixed_batch(model, fixed_views(model, n=16), steps=5)
    assert feats.shape == (16, model.backbone.feature_dim)
    assert losses[-1] < losses[0], losses


def test_mae_trains_a_timm_vit_through_its_tokens():
    """A timm ViT's embed/encode split is its own forward_features (exactly), and MAE's loss falls on it."""
    torch.manual_seed(0)
    model = build("mae", "backbone.model=deit_tiny_patch16_224", backbone="timm")
    vit, x = model.backbone, torch.randn(2, 1, SIZE, SIZE)
    assert (vit.patch_size, vit.grid) == (4, 4)
    torch.testing.assert_close(vit.encode(vit.embed(x)), vit.model.forward_features(x))
    losses, _ = train_on_a_fixed_batch(model, fixed_views(model, n=16), steps=5)
    assert losses[-1] < losses[0], losses
    with pytest.raises(ValueError, match="method=mae needs a ViT with a class token"):
        build("mae", "backbone.model=regnetx_002", backbone="timm")


@pytest.mark.parametrize("name", METHODS.names())
def test_probe_gets_no_gradient_into_the_backbone(name):
    model = build(name)
    feats = model.backbone(torch.randn(8, 1, SIZE, SIZE))
    loss, _ = model.probe.loss(feats, torch.randint(0, 10, (8,)))
    loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.probe.head.weight.grad is not None


@pytest.mark.parametrize("name", METHODS.names())
def test_every_trainable_parameter_is_in_exactly_one_optimizer(name, monkeypatch):
    """Parameters a method holds itself (MAE's mask token) as well as its modules'; two-player methods split them."""
    import sslrun.methods.adversarial as adversarial

    for module in (base, adversarial):
        monkeypatch.setattr(module, "lightning_optimizers", lambda trainer, groups, *args, **kwargs: groups)
    model = build(name)
    model._trainer = SimpleNamespace()  # read only by lightning_optimizers, patched away
    optimizers = model.configure_optimizers()
    if not isinstance(optimizers[0], list):  # one optimizer's groups, not a list of them (two players)
        optimizers = [optimizers]
    ids = [id(p) for groups in optimizers for group in groups for p in group["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}


@pytest.mark.parametrize("name", METHODS.names())
def test_teachers_are_outside_the_optimizer_and_inside_the_checkpoint(name):
    model = build(name)
    for _student, teacher in model.momentum_pairs():
        assert all(not p.requires_grad for p in teacher.parameters())
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    teacher_ids = {id(p) for _, t in model.momentum_pairs() for p in t.parameters()}
    assert not trainable & teacher_ids
    state = model.state_dict()
    if model.momentum_pairs():
        assert any(k.startswith("teacher_") for k in state)
    if hasattr(model, "queue"):
        model.queue.push(torch.randn(5, model.queue.features.shape[1]))
        restored = build(name)
        restored.load_state_dict(model.state_dict())
        assert torch.equal(restored.queue.features, model.queue.features)
        assert int(restored.queue.ptr) == 5


def test_the_queue_wraps_and_keeps_the_newest_rows():
    from sslrun.methods.queue import FeatureQueue

    queue = FeatureQueue(6, 2)
    queue.push(torch.arange(8.0).view(4, 2))
    assert len(queue.filled()) == 4
    queue.push(torch.arange(8.0, 16.0).view(4, 2))
    assert int(queue.ptr) == 2 and len(queue.filled()) == 6
    assert torch.equal(queue.features[:2], torch.tensor([[12.0, 13.0], [14.0, 15.0]]))
    assert torch.equal(queue.features[2:4], torch.tensor([[4.0, 5.0], [6.0, 7.0]]))


def test_cosine_momentum_runs_from_base_to_final():
    assert cosine_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(50, 100, 0.99) == pytest.approx(0.995)
    assert cosine_momentum(100, 100, 0.99) == pytest.approx(1.0)


def test_ema_steps_follow_optimizer_steps_under_gradient_accumulation(monkeypatch):
    """8 batches, accumulation 2, 2 epochs: 8 optimizer steps, so 8 EMA updates whose momentum follows the cosine
    over those 8 steps (not over batches, not per epoch)."""
    momenta = []
    real = base.ema_update
    monkeypatch.setattr(base, "ema_update", lambda s, t, m: (momenta.append(m), real(s, t, m)))
    model = build("byol")
    loader = DataLoader(Views(fixed_views(model, n=16)), batch_size=2)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        accumulate_grad_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, train_dataloaders=loader)
    per_step = momenta[::2]  # two (student, teacher) pairs per update
    assert trainer.global_step == 8 and len(per_step) == 8
    m = model.config
    assert per_step == pytest.approx([cosine_momentum(k, 8, m.momentum_base, m.momentum_final) for k in range(8)])


@pytest.mark.parametrize("name", ["simsiam", "byol"])
def test_no_collapse_over_a_short_run(name):
    """Per-dimension std of the L2-normalised projections stays above a floor (a collapsed encoder gives 0;
    spread-out embeddings about 1/sqrt(D))."""
    torch.manual_seed(0)
    model = build(name)
    g = torch.Generator().manual_seed(1)
    prototypes = torch.randn(8, 1, SIZE, SIZE, generator=g)
    opt = torch.optim.SGD([p for n, p in model.named_parameters() if not n.startswith("probe")], lr=0.05, momentum=0.9)
    for _step in range(30):
        images = prototypes[torch.randint(0, 8, (32,), generator=g)]
        views = [images + 0.3 * torch.randn(images.shape, generator=g) for _ in range(2)]
        opt.zero_grad()
        loss, _ = model.ssl_step(views)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        z = F.normalize(model.projector(model.backbone(prototypes.repeat(4, 1, 1, 1))), dim=1)
    dim = z.shape[1]
    assert z.std(dim=0).mean() > 0.2 / dim**0.5
