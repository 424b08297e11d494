"""sslrun vs LightlySSL's SimCLR on the same image folder, the same backbone and the same evaluation protocol.

What runs:

1. sslrun, the way a user runs it (a subprocess; recipe = sslrun's defaults, only the budget and the shared settings
   are passed)::

       sslrun pretrain method=contrastive backbone=NAME backbone.width=W data=imagefolder data.root=ROOT
           data.batch_size=B seed=S trainer.max_epochs=E hydra.run.dir=OUT/sslrun/pretrain
           trainer.enable_progress_bar=false [data.image_size=R] [data.limit=L] [extra overrides ...]

   ``data.image_size`` is passed only when ``--image-size`` is given; otherwise sslrun picks its own size and the
   script reads it (and the backbone config) back from ``OUT/sslrun/pretrain/checkpoints/last.ckpt`` for the peer.
2. LightlySSL's SimCLR written the way lightly's docs write it, on sslrun's own backbone (``BACKBONES.build`` with
   the checkpoint's backbone config, 3 input channels, same seed), so both tools train the identical architecture.
   Settings are those of lightly's CIFAR-10 benchmark (docs/source/getting_started/benchmarks/cifar10_benchmark.py
   in github.com/lightly-ai/lightly, the small-image example of its docs):
   ``SimCLRTransform(input_size=R, cj_strength=0.5, gaussian_blur=0.0)`` (other arguments at their defaults:
   min_scale=0.08, cj_prob=0.8, random_gray_scale=0.2, hf_prob=0.5, ImageNet normalisation),
   ``SimCLRProjectionHead(D, D, 128)`` (lightly: ``(512, 512, 128)`` for a 512-d ResNet-18), ``NTXentLoss()``
   (temperature 0.5), ``SGD(lr=0.06 * B / 128, momentum=0.9, weight_decay=5e-4)`` with
   ``CosineAnnealingLR(T_max=E)`` stepped per epoch (the benchmark's ``lr_factor = batch_size / 128``), fp32, a plain
   PyTorch loop as in lightly's examples/pytorch/simclr.py, ``torchvision.datasets.ImageFolder(ROOT/train)`` with the
   transform, ``DataLoader(shuffle=True, drop_last=True, num_workers=N)``. The peer runs on the device sslrun's
   checkpoint says it used (``trainer.accelerator``) unless ``--device`` says otherwise.
3. One protocol for four encoders (sslrun SSL, sslrun random init, lightly SSL, lightly random init = the same
   architecture freshly initialised with the same seed), on frozen features, each tool with its own eval
   preprocessing (sslrun: ``SSLDataModule(stage="finetune").eval_dataloaders()`` from the checkpoint's data config;
   lightly: ``ImageFolder`` + Resize(R) + CenterCrop(R) + ToTensor + Normalize(ImageNet), as lightly's benchmarks
   do): (a) weighted kNN top-1 on val, cosine, k=20, T=0.1 (``sslrun.eval.features.knn_predict``); (b) linear
   top-1 on val: features standardised with the train split's mean/std, a linear layer trained full-batch with Adam
   (lr 1e-2, no weight decay) for 300 steps of cross-entropy on the train split. Seed ``--seed`` everywhere.
4. Timing: "pretrain wall s" is, for sslrun, the wall time of the ``sslrun pretrain`` subprocess (interpreter start,
   image decoding, per-epoch kNN monitor, checkpointing included); for lightly, dataset + model set-up plus the
   training loop. img/s = train images x epochs / training seconds (sslrun: metrics.json ``seconds``, i.e. the
   ``trainer.fit`` time, its kNN monitor included; lightly: the loop). The JSON also has sslrun's own ``img_per_s``
   (steady-state steps only) and ``fit_ratio`` (sslrun fit seconds / lightly loop seconds).

Output (stdout): one JSON line with every figure and setting, a Markdown table, and
``sslrun wall time = X.XX x peer's; linear top-1 delta = +0.0XX`` (sslrun SSL minus lightly SSL). Logs go to stderr.
Needs the ``bench`` extra (``pip install -e .[bench]``, i.e. lightly). ``--results results/peer_lightly.jsonl`` also
appends the table's rows, with their provenance, to the data docs/results.md is generated from.

The README table (Fashion-MNIST PNGs from scripts/make_imagefolder.py; add ``trainer=gpu`` on a GPU)::

    python scripts/compare_peer.py --root runs/data/fmnist --epochs 8 --batch-size 256 --out runs/compare \\
        --image-size 32

A quick trial (``--limit``: the first N images of each split in class-folder order, as sslrun's ``data.limit``
takes them; at 512 the train split is a single class, so the accuracies are trivial, a check that it runs)::

    python scripts/compare_peer.py --root runs/data/fmnist --epochs 1 --limit 512 --batch-size 128 \\
        --out runs/compare-tiny
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from provenance import append_row, provenance, this_command
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

import sslrun
from sslrun.backbones import BACKBONES
from sslrun.checkpoint import Pretrained, load_pretrained
from sslrun.config import DataConfig, backbone_config
from sslrun.data import SSLDataModule
from sslrun.eval.features import extract_features, knn_predict, topk_accuracy

REPO = Path(__file__).resolve().parents[1]
_NEXT_TO_PYTHON = Path(sys.executable).with_name("sslrun")
SSLRUN = str(_NEXT_TO_PYTHON) if _NEXT_TO_PYTHON.exists() else shutil.which("sslrun") or "sslrun"
KNN_K, KNN_T = 20, 0.1
LINEAR_STEPS, LINEAR_LR = 300, 1e-2
PEER_BASE_LR, PEER_BASE_BATCH = 0.06, 128
PEER_TRANSFORM = {"cj_strength": 0.5, "gaussian_blur": 0.0}
PEER_PROJ_OUT = 128


def log(message: str) -> None:
    print(f"[compare_peer] {message}", file=sys.stderr, flush=True)


def git_commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------------------- protocol


def linear_top1(
    train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor, classes: int, seed: int
) -> float:
    """Standardise with train statistics; full-batch Adam on cross-entropy for LINEAR_STEPS steps; val top-1."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    train_x, val_x = (train_x - mean) / std, (val_x - mean) / std
    torch.manual_seed(seed)
    head = nn.Linear(train_x.shape[1], classes)
    optimizer = torch.optim.Adam(head.parameters(), lr=LINEAR_LR)
    for _ in range(LINEAR_STEPS):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(head(train_x), train_y).backward()
        optimizer.step()
    with torch.no_grad():
        return topk_accuracy(head(val_x), val_y, 1)


def evaluate(
    backbone: nn.Module, train: DataLoader, val: DataLoader, classes: int, device: torch.device, seed: int
) -> dict[str, float]:
    backbone.to(device)
    train_x, train_y = extract_features(backbone, train, device)
    val_x, val_y = extract_features(backbone, val, device)
    backbone.cpu()
    knn = topk_accuracy(knn_predict(train_x, train_y, val_x, classes, KNN_K, KNN_T), val_y, 1)
    return {"knn_top1": knn, "linear_top1": linear_top1(train_x, train_y, val_x, val_y, classes, seed)}


# ------------------------------------------------------------------------------------------------------------ sslrun


def run_sslrun(args: argparse.Namespace, run_dir: Path) -> tuple[list[str], float]:
    command = [
        SSLRUN,
        "pretrain",
        "method=contrastive",
        f"backbone={args.backbone}",
        f"backbone.width={args.width}",
        "data=imagefolder",
        f"data.root={args.root}",
        f"data.batch_size={args.batch_size}",
        f"seed={args.seed}",
        f"trainer.max_epochs={args.epochs}",
        f"hydra.run.dir={run_dir}",
        "resume=overwrite",  # timed: a finished run met again would return at once and time nothing
        "trainer.enable_progress_bar=false",
    ]
    if args.stem is not None:
        command.append(f"backbone.stem={args.stem}")
    if args.image_size is not None:
        command.append(f"data.image_size={args.image_size}")
    if args.limit is not None:
        command.append(f"data.limit={args.limit}")
    command += args.overrides
    log("running: " + " ".join(command))
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=sys.stderr)  # stdout stays for the JSON line and the table
    return command, time.perf_counter() - start


def device_of(accelerator: str) -> torch.device:
    """The device sslrun's ``trainer.accelerator`` meant (gpu/cuda, cpu, auto)."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def evaluate_sslrun(ckpt: Pretrained, device: torch.device, seed: int) -> dict[str, Any]:
    """sslrun's SSL encoder from its checkpoint and a same-seed random init, under sslrun's eval preprocessing."""
    backbone_cfg = backbone_config(ckpt.config["backbone"])
    data_cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), ckpt.config["data"])
    data = SSLDataModule(data_cfg, stage="finetune")
    train, val = data.eval_dataloaders()
    ssl = BACKBONES.build(backbone_cfg.name, backbone_cfg, ckpt.in_channels, ckpt.image_size)
    ssl.load_state_dict(ckpt.backbone_state)
    torch.manual_seed(seed)
    rand = BACKBONES.build(backbone_cfg.name, backbone_cfg, ckpt.in_channels, ckpt.image_size)
    log(f"evaluating sslrun encoders ({len(data.splits.train)} train / {len(data.splits.val)} val images)")
    result = {
        "ssl": evaluate(ssl, train, val, data.num_classes, device, seed),
        "random": evaluate(rand, train, val, data.num_classes, device, seed),
        "backbone": OmegaConf.to_container(backbone_cfg),
        "image_size": ckpt.image_size,
        "in_channels": ckpt.in_channels,
        "feature_dim": ssl.feature_dim,
        "accelerator": str(ckpt.config["trainer"]["accelerator"]),
        "precision": str(ckpt.config["trainer"]["precision"]),
        "train_images": len(data.splits.train),
        "data_config": ckpt.config["data"],
    }
    del data, train, val
    return result


# ----------------------------------------------------------------------------------------------------------- lightly


class SimCLR(nn.Module):
    """lightly's examples/pytorch/simclr.py model: backbone, then SimCLRProjectionHead."""

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        from lightly.models.modules import SimCLRProjectionHead

        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(feature_dim, feature_dim, PEER_PROJ_OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone(x).flatten(start_dim=1)
        return self.projection_head(x)


def _first(dataset: Dataset, limit: int | None) -> Dataset:
    return dataset if limit is None or limit >= len(dataset) else Subset(dataset, range(limit))


def build_peer_backbone(backbone: dict, image_size: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    cfg = backbone_config(backbone)
    return BACKBONES.build(cfg.name, cfg, 3, image_size)


def train_peer(
    args: argparse.Namespace, backbone: dict, image_size: int, device: torch.device, lr: float
) -> tuple[nn.Module, dict[str, float]]:
    """lightly's SimCLR recipe (module docstring), timed: set-up + loop (wall) and the loop alone (train)."""
    import torchvision
    from lightly.loss import NTXentLoss
    from lightly.transforms import SimCLRTransform

    start = time.perf_counter()
    transform = SimCLRTransform(input_size=image_size, **PEER_TRANSFORM)
    dataset = _first(torchvision.datasets.ImageFolder(str(Path(args.root) / "train"), transform=transform), args.limit)
    generator = torch.Generator().manual_seed(args.seed)
    dataloader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.num_workers,
        generator=generator,
    )
    encoder = build_peer_backbone(backbone, image_size, args.seed)
    model = SimCLR(encoder, encoder.feature_dim).to(device)
    criterion = NTXentLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs)
    sync(device)
    loop_start = time.perf_counter()
    for epoch in range(args.epochs):
        total_loss = torch.zeros((), device=device)
        for batch in dataloader:
            x0, x1 = batch[0]
            x0 = x0.to(device)
            x1 = x1.to(device)
            loss = criterion(model(x0), model(x1))
            total_loss += loss.detach()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        scheduler.step()
        log(f"lightly epoch {epoch:>02}, loss: {(total_loss / len(dataloader)).item():.5f}")
    sync(device)
    end = time.perf_counter()
    return encoder.cpu(), {
        "wall_s": end - start,
        "train_s": end - loop_start,
        "train_images": len(dataset),
        "final_loss": (total_loss / len(dataloader)).item(),
        "feature_dim": encoder.feature_dim,
    }


def evaluate_peer(
    args: argparse.Namespace, ssl: nn.Module | None, backbone: dict, image_size: int, device: torch.device
) -> dict[str, Any]:
    """lightly's SSL encoder (if trained) and a same-seed random init, under lightly's eval preprocessing."""
    import torchvision
    from lightly.transforms.utils import IMAGENET_NORMALIZE
    from torchvision import transforms as T

    transform = T.Compose(
        [
            T.Resize(image_size),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(mean=IMAGENET_NORMALIZE["mean"], std=IMAGENET_NORMALIZE["std"]),
        ]
    )
    root = Path(args.root)
    train_set = torchvision.datasets.ImageFolder(str(root / "train"), transform=transform)
    val_set = torchvision.datasets.ImageFolder(str(root / "val"), transform=transform)
    classes = len(train_set.classes)
    train, val = (
        DataLoader(_first(split, args.limit), batch_size=args.batch_size, num_workers=args.num_workers)
        for split in (train_set, val_set)
    )
    log(f"evaluating lightly encoders ({len(train.dataset)} train / {len(val.dataset)} val images)")
    rand = build_peer_backbone(backbone, image_size, args.seed)
    result = {"random": evaluate(rand, train, val, classes, device, args.seed)}
    if ssl is not None:
        result["ssl"] = evaluate(ssl, train, val, classes, device, args.seed)
    return result


# -------------------------------------------------------------------------------------------------------------- main


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="image tree: ROOT/train/<class>/*, ROOT/val/<class>/*")
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=None, help="default: whatever sslrun picks")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--stem", default=None, help="backbone.stem (default: sslrun's, auto)")
    parser.add_argument(
        "--num-workers", type=int, default=2, help="lightly's data loader workers (sslrun decides its own)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="first N images of each split (quick trials)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="peer/eval device (default: sslrun's)")
    parser.add_argument("--peer-lr", type=float, default=None, help="default: lightly's 0.06 x batch / 128")
    parser.add_argument("--skip-peer", action="store_true", help="debugging: no lightly rows")
    parser.add_argument("--skip-sslrun", action="store_true", help="debugging: reuse OUT/sslrun/pretrain if there")
    parser.add_argument("--results", help="also append the table's rows to this results/*.jsonl file")
    parser.add_argument("overrides", nargs="*", help="extra sslrun overrides (key=value), e.g. trainer=gpu")
    args = parser.parse_intermixed_args()

    out = Path(args.out)
    run_dir = out / "sslrun" / "pretrain"
    command: list[str] | None = None
    wall: float | None = None
    if not args.skip_sslrun:
        command, wall = run_sslrun(args, run_dir)
    have_sslrun = (run_dir / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text()) if have_sslrun else {}

    device = torch.device(args.device) if args.device else None
    ours: dict[str, Any] | None = None
    if have_sslrun:
        ckpt = load_pretrained(str(run_dir))
        device = device or device_of(str(ckpt.config["trainer"]["accelerator"]))
        ours = evaluate_sslrun(ckpt, device, args.seed)
        del ckpt
    device = device or device_of("auto")
    backbone = ours["backbone"] if ours else {"name": args.backbone, "width": args.width, "stem": args.stem or "auto"}
    image_size = args.image_size or (ours["image_size"] if ours else None)
    if image_size is None and not args.skip_peer:
        parser.error(f"no sslrun checkpoint in {run_dir} to take the resolution from: pass --image-size")

    peer: dict[str, Any] | None = None
    lightly_version = None
    peer_lr = args.peer_lr if args.peer_lr is not None else PEER_BASE_LR * args.batch_size / PEER_BASE_BATCH
    if not args.skip_peer:
        import lightly

        lightly_version = lightly.__version__
        log(f"training lightly SimCLR on {device} ({image_size} px, lr {peer_lr:g})")
        encoder, timing = train_peer(args, backbone, image_size, device, peer_lr)
        peer = {**evaluate_peer(args, encoder, backbone, image_size, device), **timing}

    rows: list[dict[str, Any]] = []
    if ours is not None:
        fit = metrics.get("seconds")
        speed = ours["train_images"] * args.epochs / fit if fit else None
        rows.append({"encoder": "sslrun SSL", "pretrain_wall_s": wall, "img_per_s": speed, **ours["ssl"]})
        rows.append({"encoder": "sslrun random init", "pretrain_wall_s": None, "img_per_s": None, **ours["random"]})
    if peer is not None:
        speed = peer["train_images"] * args.epochs / peer["train_s"]
        rows.append({"encoder": "lightly SSL", "pretrain_wall_s": peer["wall_s"], "img_per_s": speed, **peer["ssl"]})
        rows.append({"encoder": "lightly random init", "pretrain_wall_s": None, "img_per_s": None, **peer["random"]})

    summary: dict[str, float | None] = {"wall_ratio": None, "fit_ratio": None, "linear_top1_delta": None}
    if ours is not None and peer is not None:
        summary["wall_ratio"] = wall / peer["wall_s"] if wall is not None else None
        summary["fit_ratio"] = metrics["seconds"] / peer["train_s"] if "seconds" in metrics else None
        summary["linear_top1_delta"] = ours["ssl"]["linear_top1"] - peer["ssl"]["linear_top1"]

    settings = {
        "root": str(args.root),
        "backbone": backbone,
        "resolution": image_size,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "seed": args.seed,
        "limit": args.limit,
        "peer_num_workers": args.num_workers,
        "device": str(device),
        "sslrun_version": sslrun.__version__,
        "sslrun_commit": git_commit(),
        "sslrun_command": command,
        "sslrun_precision": ours["precision"] if ours else None,
        "sslrun_in_channels": ours["in_channels"] if ours else None,
        "sslrun_data": ours["data_config"] if ours else None,
        "lightly_version": lightly_version,
        "torch_version": torch.__version__,
        "peer_recipe": {
            "transform": {"input_size": image_size, **PEER_TRANSFORM},
            "projection_head": "SimCLRProjectionHead(feature_dim, feature_dim, 128)",
            "loss": "NTXentLoss(temperature=0.5)",
            "optimizer": {"name": "sgd", "lr": peer_lr, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine"},
            "precision": "32",
        },
        "protocol": {
            "knn": {"k": KNN_K, "temperature": KNN_T, "metric": "cosine"},
            "linear": {"optimizer": "adam", "lr": LINEAR_LR, "steps": LINEAR_STEPS, "full_batch": True},
        },
    }
    record = {
        "settings": settings,
        "rows": rows,
        "sslrun": {"wall_s": wall, "metrics": metrics, "train_images": ours["train_images"] if ours else None},
        "lightly": peer,
        **summary,
    }
    print(json.dumps(record))
    print()
    size = f"{image_size} px" if image_size else "sslrun's resolution"
    arch = f"{backbone['name']} width={backbone['width']} stem={backbone['stem']}"
    print(f"{arch}, {size}, batch {args.batch_size}, {args.epochs} epochs, {device}")
    print("| encoder | pretrain wall s | img/s | kNN top-1 | linear top-1 |")
    print("|---|---|---|---|---|")
    for row in rows:
        wall_s, speed = fmt(row["pretrain_wall_s"], ".2f"), fmt(row["img_per_s"], ".0f")
        print(f"| {row['encoder']} | {wall_s} | {speed} | {row['knn_top1']:.3f} | {row['linear_top1']:.3f} |")
    if summary["wall_ratio"] is not None and summary["linear_top1_delta"] is not None:
        print(
            f"sslrun wall time = {summary['wall_ratio']:.2f} x peer's; "
            f"linear top-1 delta = {summary['linear_top1_delta']:+.3f}"
        )
    if args.results:
        origin = provenance(this_command())
        for row in rows:
            append_row(args.results, row | origin)


if __name__ == "__main__":
    main()
