"""Run one optimizer step of a method on a fixed global batch with N CPU processes (Lightning DDP, gloo) and save
the resulting parameters and the loss; tests/distributed/test_ddp.py compares world size 1 against 2."""

import argparse
import os

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset, Subset

from sslrun.config import validate
from sslrun.data.recipes import recipe_views
from sslrun.methods import METHODS
from sslrun.pretrain import schema
from sslrun.trainer import strategy_for

GLOBAL_BATCH = 16
IMAGE_SIZE = 16


class FixedViews(Dataset):
    """One fixed view per spec the method asks for (multi-crop's local views at their smaller size): the base
    images resized to the view's size, plus noise."""

    def __init__(self, specs) -> None:
        g = torch.Generator().manual_seed(0)
        base = torch.randn(GLOBAL_BATCH, 1, IMAGE_SIZE, IMAGE_SIZE, generator=g)
        self.views = []
        for spec in specs:
            size = spec.resolve(recipe_views(), IMAGE_SIZE).size
            view = torch.nn.functional.interpolate(base, size=size, mode="bilinear", align_corners=False)
            self.views.append(view + 0.5 * torch.randn(view.shape, generator=g))
        self.y = torch.arange(GLOBAL_BATCH) % 10

    def __len__(self) -> int:
        return GLOBAL_BATCH

    def __getitem__(self, i: int):
        return tuple(v[i] for v in self.views), self.y[i]


def without_batchnorm(module: torch.nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
            setattr(module, name, torch.nn.Identity())
        else:
            without_batchnorm(child)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, required=True, help="processes on this node")
    parser.add_argument("--nodes", type=int, default=1, help="nodes (each run as its own launch, NODE_RANK set)")
    parser.add_argument("--out", required=True, help="a folder: one <job>.pt per job (and .rank<r> per other rank)")
    parser.add_argument("jobs", nargs="+", help="method[:backend[:library:model]], e.g. byol, contrastive:chunked")
    args = parser.parse_args()
    for job in args.jobs:  # every job in one launch: the processes start (and import torch) once
        method, backend, backbone = parse_job(job)
        out = os.path.join(args.out, f"{job.replace(':', '-')}.pt")
        job_args = {"method": method, "backend": backend, "backbone": backbone, "out": out}
        run_job(argparse.Namespace(devices=args.devices, nodes=args.nodes, **job_args))


def parse_job(job: str) -> tuple[str, str, str | None]:
    """``method[:backend[:library:model]]`` -> (method, loss backend, library:model or None)."""
    method, backend, *backbone = [*job.split(":"), "naive"][: max(2, len(job.split(":")))]
    return method, backend, ":".join(backbone) or None


def run_job(args: argparse.Namespace) -> None:
    if args.backbone:
        library, model_name = args.backbone.split(":")
        backbone = [f"backbone={library}", f"backbone.model={model_name}"]
    else:
        backbone = [f"backbone={(METHODS.get(args.method).backbones or ('convnet',))[0]}", "backbone.width=0.125"]
    overrides = [
        f"method={args.method}",
        *backbone,
        "optim=sgd",
        "optim.lr=0.5",
        "optim.scale_lr=false",
        "optim.weight_decay=0",
        "optim.momentum=0",
        f"data.batch_size={GLOBAL_BATCH // (args.devices * args.nodes)}",
    ]
    if args.method == "contrastive":
        overrides.append(f"method.loss_backend={args.backend}")
    with initialize_config_module("sslrun.configs", version_base="1.3"):
        cfg = compose("pretrain", overrides=overrides)
    cfg = OmegaConf.to_container(validate(cfg, schema(cfg)), resolve=True)
    pl.seed_everything(0, verbose=False)
    method = METHODS.get(args.method)
    model = method(cfg, in_channels=1, image_size=IMAGE_SIZE, num_classes=10)
    # SyncBatchNorm needs GPUs; without it per-rank batch statistics differ from the single-process ones by design,
    # so batch norm is taken out to compare the gather, the loss and the gradient reduction alone.
    without_batchnorm(model)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    losses = []

    class RecordLoss(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(trainer.strategy.reduce(outputs["loss"].detach(), reduce_op="mean").item())

    world = args.devices * args.nodes
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=args.devices,
        num_nodes=args.nodes,
        strategy=strategy_for("ddp", args.devices, args.nodes, not model.automatic_optimization)
        if world > 1
        else "auto",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[RecordLoss()],
        use_distributed_sampler=False,
    )
    # Rank r takes the contiguous block r of the global batch (Lightning's DistributedSampler would interleave the
    # rows), so a gathered batch has the single-process row order and queues can be compared row by row.
    views = FixedViews(method.view_specs(OmegaConf.create(cfg["method"])))
    per_rank = GLOBAL_BATCH // world
    rank = int(os.environ.get("NODE_RANK", 0)) * args.devices + int(os.environ.get("LOCAL_RANK", 0))
    loader = DataLoader(Subset(views, range(rank * per_rank, (rank + 1) * per_rank)), batch_size=per_rank)
    trainer.fit(model, train_dataloaders=loader)
    # Every rank saves its state: buffers such as queues must be equal on all ranks, not only on rank 0.
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = args.out if trainer.is_global_zero else f"{args.out}.rank{trainer.global_rank}"
    torch.save({"loss": losses[0], "init": init, "params": params}, out)


if __name__ == "__main__":
    main()
