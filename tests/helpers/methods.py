"""Building a registered method on a tiny config, and fixed batches of the views it asks for: shared by the method
tests."""

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from sslrun.config import LIBRARY_BACKBONES, validate
from sslrun.data.recipes import recipe_views
from sslrun.methods import METHODS
from sslrun.pretrain import schema

SIZE = 16


def method_config(name: str, *extra: str, backbone: str | None = None) -> dict:
    GlobalHydra.instance().clear()
    backbone = backbone or (METHODS.get(name).backbones or ("convnet",))[0]
    width = [] if backbone in LIBRARY_BACKBONES else ["backbone.width=0.25"]  # a library model's size is its name
    overrides = [f"method={name}", f"backbone={backbone}", *width, "trainer=debug", "optim=sgd", *extra]
    with initialize_config_module("sslrun.configs", version_base="1.3"):
        cfg = compose("pretrain", overrides=overrides)
    return OmegaConf.to_container(validate(cfg, schema(cfg)), resolve=True)


def build(name: str, *extra: str, backbone: str | None = None):
    cfg = method_config(name, *extra, backbone=backbone)
    return METHODS.get(name)(cfg, in_channels=1, image_size=SIZE, num_classes=10)


def fixed_views(model, n: int = 32, seed: int = 0) -> list[torch.Tensor]:
    """One batch per view the method asks for, at that view's size: correlated noise images."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 1, SIZE, SIZE, generator=g)
    views = []
    for spec in type(model).view_specs(model.config):
        size = spec.resolve(recipe_views(), SIZE).size
        view = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        views.append(view + 0.5 * torch.randn(view.shape, generator=g))
    return views


class Views(Dataset):
    def __init__(self, views):
        self.views = views

    def __len__(self):
        return len(self.views[0])

    def __getitem__(self, i):
        return tuple(v[i] for v in self.views), i % 10


def train_on_a_fixed_batch(model, views: list[torch.Tensor], steps: int) -> tuple[list[float], torch.Tensor]:
    """``steps`` Adam steps of the SSL loss itself (not the probe's) on one batch; the method's state (queues, DINO's
    centre) is held fixed, so the objective is fixed too (DINO's loss rises as its centre moves, by design).
    Returns the losses and the last features."""
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("probe")], lr=1e-3)
    state = {k: v.clone() for k, v in model.named_buffers()}
    losses = []
    for _ in range(steps):
        model.load_state_dict(state, strict=False)
        opt.zero_grad()
        loss, feats = model.ssl_step(views)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, feats
