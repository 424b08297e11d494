"""The classic objectives and MAE: rotation labels, jigsaw tiles and the permutation set, the denoising corruption,
MAE's masking, an autoencoder that learns to reconstruct, and two-player methods that save and resume both
optimizers and count two optimizer steps per batch."""

import copy

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from helpers.methods import SIZE, Views, build, fixed_views
from sslrun.losses import reconstruction_mse
from sslrun.methods.jigsaw import cut_tiles, hamming_permutations
from sslrun.methods.rotation import rotate_all


def test_rotation_labels_name_the_counter_clockwise_quarter_turns():
    image = torch.zeros(1, 1, 4, 4)
    image[0, 0, 0, 3] = 1.0  # top-right corner
    rotated, labels = rotate_all(image.repeat(2, 1, 1, 1))
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    corners = [(0, 3), (0, 0), (3, 0), (3, 3)]  # where the marked pixel goes after k quarter turns
    for k, (row, col) in enumerate(corners):
        assert rotated[2 * k, 0, row, col] == 1.0 and rotated[2 * k].sum() == 1.0, k


def test_the_permutation_set_is_deterministic_distinct_and_far_apart():
    perms = hamming_permutations(9, 100)
    assert torch.equal(perms, hamming_permutations(9, 100))
    assert all(sorted(p.tolist()) == list(range(9)) for p in perms)
    distance = (perms[:, None] != perms[None]).sum(-1)
    distance.fill_diagonal_(9)
    g = torch.Generator().manual_seed(0)
    random_set = torch.stack([torch.randperm(9, generator=g) for _ in range(100)])
    random_distance = (random_set[:, None] != random_set[None]).sum(-1)
    random_distance.fill_diagonal_(9)
    # Greedy maximal-Hamming selection: no two of the 100 share more than 3 of 9 positions; a random set does.
    assert distance.min() >= 6 > random_distance.min()
    assert len(hamming_permutations(4, 24).unique(dim=0)) == 24  # a 2 x 2 grid: all 4! permutations


def test_the_permutation_set_lives_in_the_checkpoint():
    model = build("jigsaw")
    assert "permutations" in model.state_dict()
    assert torch.equal(model.state_dict()["permutations"], hamming_permutations(4, 24))  # 16 px: auto grid 2


def test_jigsaw_shows_the_tiles_in_the_order_of_its_label():
    model = build("jigsaw")
    images = torch.randn(5, 1, SIZE, SIZE)
    shuffled, labels = model.puzzles(images)
    n, slack, tiles = len(images), model.cell - model.tile + 1, model.grid**2
    _, offsets = model.draw(
        n, lambda m, g: (torch.randint(24, (m,), generator=g), torch.randint(slack, (m, tiles, 2), generator=g))
    )
    assert len(set(labels.tolist())) > 1
    cut = cut_tiles(images, model.grid, model.tile, offsets)
    for b in range(n):
        order = model.permutations[labels[b]]
        for j in range(tiles):
            assert torch.equal(shuffled[b, j], cut[b, order[j]])


def test_jigsaw_tiles_can_be_shown_at_another_size():
    model = build("jigsaw", "method.tile_size=12")
    shuffled, _ = model.puzzles(torch.randn(3, 1, SIZE, SIZE))
    assert shuffled.shape == (3, model.grid**2, 1, 12, 12) and model.tile < 12
    loss, _ = model.ssl_step([torch.randn(3, 1, SIZE, SIZE)])
    assert torch.isfinite(loss)


def test_cut_tiles_takes_each_tile_from_its_cell_at_its_offset():
    images = torch.arange(36.0).view(1, 1, 6, 6)
    offsets = torch.tensor([[[0, 0], [1, 0], [0, 1], [1, 1]]])
    tiles = cut_tiles(images, 2, 2, offsets)  # cells of 3 px, tiles of 2 px
    assert torch.equal(tiles[0, 3, 0], images[0, 0, 4:6, 4:6])
    assert torch.equal(tiles[0, 1, 0], images[0, 0, 1:3, 3:5])


def test_denoising_noise_is_fixed_per_step_and_absent_without_noise():
    clean = build("autoencoder")
    images = torch.randn(4, 1, SIZE, SIZE)
    assert torch.equal(clean.corrupt(images), images)
    noisy = build("autoencoder", "method.noise=0.5")
    first = noisy.corrupt(images)
    assert torch.equal(first, noisy.corrupt(images))  # same step, same draw
    assert (first - images).std().item() == pytest.approx(0.5, rel=0.1)


def test_mae_hides_the_same_number_of_patches_in_every_image():
    model = build("mae")
    order, mask = model.random_masking(6)
    assert (mask.sum(dim=1) == model.patches - model.visible).all()
    assert torch.equal(order.sort(dim=1).values, torch.arange(model.patches).expand(6, -1))
    kept = mask.gather(1, order[:, : model.visible])
    assert (kept == 0).all()
    prediction, _ = model.predict(torch.randn(6, 1, SIZE, SIZE))
    assert prediction.shape == (6, model.patches, model.patch**2)


def test_an_autoencoder_learns_to_reconstruct_a_fixed_batch():
    torch.manual_seed(0)
    model = build("autoencoder")
    g = torch.Generator().manual_seed(0)
    images = torch.nn.functional.avg_pool2d(torch.randn(16, 1, SIZE + 3, SIZE + 3, generator=g), 4, stride=1)
    images = (images - images.mean()) / images.std()
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("probe")], lr=3e-3)
    model.eval()  # fixed batch-norm statistics: the error measured is the one evaluation sees
    with torch.no_grad():
        before = reconstruction_mse(model.decoder(model.backbone(images)), images).item()
    model.train()
    for _ in range(150):
        opt.zero_grad()
        loss, _ = model.ssl_step([images])
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = reconstruction_mse(model.decoder(model.backbone(images)), images).item()
    assert after < 0.3 * before, (before, after)


@pytest.mark.parametrize("name", ["gan", "adversarial_autoencoder"])
def test_two_player_methods_save_and_resume_both_optimizers(tmp_path, name):
    model = build(name, "optim=adam")
    loader = DataLoader(Views(fixed_views(model, n=8)), batch_size=4)
    args = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer = pl.Trainer(max_epochs=1, default_root_dir=tmp_path, **args)
    trainer.fit(model, train_dataloaders=loader)
    assert trainer.global_step == 4  # 2 batches x 2 optimizers, Lightning's count under manual optimisation
    ckpt = tmp_path / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=False)
    assert len(saved["optimizer_states"]) == 2 and all(s["state"] for s in saved["optimizer_states"])
    assert len(saved["lr_schedulers"]) == 2 and all(s["last_epoch"] == 2 for s in saved["lr_schedulers"])

    restored = {}

    class Capture(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            restored["states"] = [copy.deepcopy(o.state_dict()) for o in trainer.optimizers]

    resumed = build(name, "optim=adam")
    trainer = pl.Trainer(max_epochs=2, callbacks=[Capture()], default_root_dir=tmp_path, **args)
    trainer.fit(resumed, train_dataloaders=loader, ckpt_path=ckpt)
    for before, after in zip(saved["optimizer_states"], restored["states"], strict=True):
        assert before["state"].keys() == after["state"].keys()
        for key, state in before["state"].items():
            torch.testing.assert_close(after["state"][key]["exp_avg"], state["exp_avg"])
    assert trainer.global_step == 8


def test_two_player_methods_clip_each_optimizer_and_train_in_mixed_precision(tmp_path):
    """``trainer.gradient_clip_val`` reaches both optimizers (Lightning refuses automatic clipping under manual
    optimisation, so the method clips); bf16 autocast runs through ``manual_backward``."""
    model = build("gan", "optim=adam", "trainer.gradient_clip_val=0.01")
    norms = []
    real = model.clip_gradients

    def clip(optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        real(optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm)
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append((gradient_clip_val, torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item()))

    model.clip_gradients = clip
    loader = DataLoader(Views(fixed_views(model, n=8)), batch_size=4)
    trainer = pl.Trainer(
        accelerator="cpu",
        precision="bf16-mixed",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, train_dataloaders=loader)
    assert len(norms) == 2 and all(value == 0.01 and norm <= 0.01 * 1.001 for value, norm in norms), norms
