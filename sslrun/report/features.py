"""A pretrain run's backbone, rebuilt from its checkpoint, applied to its own data: validation embeddings for the
t-SNE map and cosine nearest neighbours among the training images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from threadpoolctl import threadpool_limits
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from sslrun.backbones import BACKBONES
from sslrun.checkpoint import load_pretrained
from sslrun.config import DataConfig, backbone_config
from sslrun.data import SSLDataModule
from sslrun.data.base import square_image
from sslrun.eval.features import extract_features

BANK = 10_000  # training images searched for neighbours at most (evenly spaced)
QUERIES = 8
NEIGHBOURS = 5


@dataclass
class Embedded:
    data: SSLDataModule
    val_idx: torch.Tensor  # positions in the val split
    val_x: torch.Tensor  # (V, D) L2-normalised
    val_y: torch.Tensor
    train_idx: torch.Tensor  # positions in the train split
    train_x: torch.Tensor  # (T, D) L2-normalised
    train_y: torch.Tensor


@dataclass
class Retrieved:
    queries: list[np.ndarray]  # images (H, W) or (H, W, 3) in [0, 1]
    neighbours: list[list[np.ndarray]]
    matches: list[list[bool | None]]  # neighbour label == query label; None where either is unknown
    captions: list[list[str]]  # per row: "class <id>" of the query, then of each neighbour ("" when unlabelled)
    bank_size: int
    train_size: int


def load(run_dir: Path) -> tuple[nn.Module, SSLDataModule]:
    """The run's backbone (as ``sslrun finetune`` builds it) and its data; ValueError when either cannot be had."""
    ckpt = load_pretrained(str(run_dir))
    backbone_cfg = backbone_config(ckpt.config["backbone"])
    backbone = BACKBONES.build(backbone_cfg.name, backbone_cfg, ckpt.in_channels, ckpt.image_size)
    backbone.load_state_dict(ckpt.backbone_state)
    try:
        data_cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), ckpt.config["data"])
    except OmegaConfBaseException as err:
        raise ValueError(f"the data config in {ckpt.path} does not fit this sslrun: {err.msg}") from None
    data_cfg.num_workers = 0
    # stage pretrain: unlabelled data is allowed (labels -1); the eval loaders are the same in both stages
    return backbone, SSLDataModule(data_cfg, stage="pretrain")


def _spaced(n: int, k: int) -> torch.Tensor:
    return torch.arange(n) if k >= n else torch.arange(k) * n // k


def _features(backbone: nn.Module, dataset: Dataset, idx: torch.Tensor, batch_size: int):
    loader = DataLoader(Subset(dataset, idx.tolist()), batch_size=batch_size, shuffle=False)
    x, y = extract_features(backbone, loader, torch.device("cpu"))
    return F.normalize(x, dim=1), y


def embed(run_dir: Path, max_points: int) -> Embedded:
    """Features of up to ``max_points`` val images and ``BANK`` train images, both evenly spaced over the split."""
    backbone, data = load(run_dir)
    train_eval, val_eval = data.eval_dataloaders()
    batch = max(data.cfg.batch_size, 256)
    val_idx = _spaced(len(val_eval.dataset), max_points)
    train_idx = _spaced(len(train_eval.dataset), BANK)
    val_x, val_y = _features(backbone, val_eval.dataset, val_idx, batch)
    train_x, train_y = _features(backbone, train_eval.dataset, train_idx, batch)
    return Embedded(data, val_idx, val_x, val_y, train_idx, train_x, train_y)


def tsne(x: torch.Tensor) -> np.ndarray | None:
    """2-D t-SNE of the (N, D) features (None below 5 points: nothing to map)."""
    from sklearn.manifold import TSNE

    n = len(x)
    if n < 5:
        return None
    perplexity = min(30.0, (n - 1) / 3)
    # One thread: the map does not depend on the core count, and OpenMP threads competing with other work (or with
    # torch's idle pool) made 64 points take 20 s on a busy 2-core machine (2000 points: ~10 s on one thread).
    with threadpool_limits(1):
        return TSNE(n_components=2, init="pca", random_state=0, perplexity=perplexity).fit_transform(x.numpy())


def _picture(image: torch.Tensor, size: int) -> np.ndarray:
    """uint8 (C, H, W) -> floats in [0, 1], (H, W) for one channel, (H, W, 3) for three, squared as the model saw it."""
    image = square_image(image, size).float() / 255.0
    return image[0].numpy() if image.shape[0] == 1 else image[:3].permute(1, 2, 0).numpy()


def retrieve(embedded: Embedded) -> Retrieved:
    """``QUERIES`` evenly spaced val images and their ``NEIGHBOURS`` most cosine-similar training images."""
    e = embedded
    splits, size = e.data.splits, e.data.image_size
    picks = _spaced(len(e.val_idx), QUERIES)
    sims = e.val_x[picks] @ e.train_x.T
    nearest = sims.topk(min(NEIGHBOURS, len(e.train_idx)), dim=1).indices
    queries, neighbours, matches, captions = [], [], [], []
    for pick, row in zip(picks.tolist(), nearest.tolist(), strict=True):
        label = int(e.val_y[pick])
        queries.append(_picture(splits.val[int(e.val_idx[pick])][0], size))
        neighbours.append([_picture(splits.train[int(e.train_idx[j])][0], size) for j in row])
        found = [int(e.train_y[j]) for j in row]
        matches.append([None if label < 0 or other < 0 else other == label for other in found])
        captions.append([f"class {y}" if y >= 0 else "" for y in (label, *found)])
    return Retrieved(queries, neighbours, matches, captions, len(e.train_idx), len(splits.train))
