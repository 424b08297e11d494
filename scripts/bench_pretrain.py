"""Pretraining throughput: sslrun (Lightning, online probe, logging) versus a plain PyTorch loop over the same
model, loss, data loader, batch and precision; and sslrun's default ``cpu`` preset versus a plain fp32 loop.

Prints one JSON line. Images/s counts source images (each yields two views) per second, first step excluded.
Runs alternate (sslrun, plain, sslrun, plain) and the best of each is kept, as this machine is shared.

    python scripts/bench_pretrain.py --steps 30 backbone=resnet18 backbone.width=0.25
    python scripts/bench_pretrain.py --steps 30 backbone=resnet18 backbone.width=0.25 data=imagefolder \
        data.root=$PWD/runs/data/fmnist      # a PNG folder decoded once into RAM, views made a batch at a time

    python scripts/bench_pretrain.py --compile --steps 40 --results results/compile.jsonl   # trainer.compile

``--compile`` times sslrun with ``trainer.compile=false`` against ``true`` instead (alternating; the compiled runs'
first steps, which compile, are excluded like every run's first step; the compile time is reported apart).
``data.root`` must be absolute: each timed run works inside ``--out``. ``--results results/throughput.jsonl`` also
appends the JSON line, with its provenance, to the data docs/results.md is generated from.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf
from provenance import append_row, provenance, this_command

from sslrun import pretrain
from sslrun.backbones.library import describe
from sslrun.config import LIBRARY_BACKBONES, validate
from sslrun.data import SSLDataModule
from sslrun.losses import nt_xent
from sslrun.methods import METHODS
from sslrun.optim import build_optimizer, param_groups


def config(overrides: list[str]) -> DictConfig:
    with initialize_config_module("sslrun.configs", version_base="1.3"):
        cfg = compose("pretrain", overrides=overrides)
    return validate(cfg, pretrain.schema(cfg))


def describe_backbone(backbone: DictConfig) -> str:
    """``resnet18 width=0.25``, or a library's model: ``timm regnetx_002``."""
    if backbone.name in LIBRARY_BACKBONES:
        return describe(backbone)
    return f"{backbone.name} width={backbone.width}"  # no stem: the key of the rows measured before


def sslrun_img_per_s(cfg: DictConfig, steps: int, out_dir: str) -> float:
    """One timed run in a fresh directory of its own under ``out_dir``: a run dir met again would be resumed, and a
    finished one would return the old run's figure (it once did, to the digit, for every repeat)."""
    overrides = {"trainer": {"max_steps": steps, "max_epochs": -1, "enable_progress_bar": False}}
    cfg = OmegaConf.merge(cfg, overrides)
    cfg.eval.every_n_epochs = 10**6
    fresh = tempfile.mkdtemp(prefix="repeat-", dir=out_dir)
    with contextlib.chdir(fresh):
        return pretrain.run(cfg)["img_per_s"]


def plain_img_per_s(cfg: DictConfig, steps: int, precision: str, channels_last: bool) -> float:
    """The same backbone + projector + NT-Xent + optimizer, written as the loop a user would write by hand."""
    torch.manual_seed(cfg.seed)
    data = SSLDataModule(cfg.data, stage="pretrain")
    model = METHODS.get(cfg.method.name)(OmegaConf.to_container(cfg), data.channels, data.image_size, 10)
    net = torch.nn.ModuleDict({"backbone": model.backbone, "projector": model.projector}).train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net.to(memory_format=memory_format)
    optimizer, schedule = build_optimizer(param_groups(net, cfg.optim), cfg.optim, cfg.data.batch_size, 10, steps)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    images, seconds, done, last = 0, 0.0, 0, None
    while done < steps:
        for batch in data.train_dataloader():
            (v1, v2), _ = data.augment_batch(batch) if data.batched else batch
            v1, v2 = v1.contiguous(memory_format=memory_format), v2.contiguous(memory_format=memory_format)
            with autocast:
                z1, z2 = net["projector"](net["backbone"](torch.cat([v1, v2]))).float().chunk(2)
                loss = nt_xent(z1, z2, cfg.method.temperature, cfg.method.loss_backend)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            now = time.perf_counter()
            if last is not None:
                images, seconds = images + v1.shape[0], seconds + now - last
            last, done = now, done + 1
            if done >= steps:
                break
        last = None
    return images / seconds


def compare_compiled(cfg: DictConfig, args: argparse.Namespace) -> None:
    """Images/s of sslrun with and without ``trainer.compile``, alternating, best of each; and the seconds the
    compiled run's first repeat took over the eager one's (mostly compilation; inductor's on-disk cache, warm after a
    first compile of the same graphs, makes later ones cheaper)."""
    eager, compiled, first = [], [], []
    for _ in range(args.repeats):
        for flag, out in ((False, eager), (True, compiled)):
            start = time.perf_counter()
            out.append(sslrun_img_per_s(OmegaConf.merge(cfg, {"trainer": {"compile": flag}}), args.steps, args.out))
            first.append((flag, time.perf_counter() - start))
    wall = {flag: next(t for f, t in first if f == flag) for flag in (False, True)}  # the first repeat: compiling
    result = {
        "bench": "compile",
        "backbone": describe_backbone(cfg.backbone),
        "method": cfg.method.name,
        "data": cfg.data.name,
        "batch_size": cfg.data.batch_size,
        "precision": str(cfg.trainer.precision),
        "channels_last": bool(cfg.trainer.channels_last),
        "steps": args.steps,
        "eager_img_per_s": round(max(eager), 1),
        "compiled_img_per_s": round(max(compiled), 1),
        "compiled_vs_eager": round(max(compiled) / max(eager), 3),
        "compile_overhead_s": round(wall[True] - wall[False], 1),  # first repeat's wall time, compiled minus eager
        "torch": torch.__version__,
    }
    print(json.dumps(result))
    if args.results:
        append_row(args.results, result | provenance(this_command()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--results", help="also append the result to this results/*.jsonl file")
    parser.add_argument("--compile", action="store_true", help="sslrun eager against sslrun trainer.compile=true")
    parser.add_argument("overrides", nargs="*", help="pretrain config overrides, e.g. backbone.width=0.25")
    args = parser.parse_args()
    cfg = config(args.overrides)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    precision, channels_last = str(cfg.trainer.precision), bool(cfg.trainer.channels_last)
    if args.compile:
        return compare_compiled(cfg, args)
    ours, plain, fp32 = [], [], []
    for _ in range(args.repeats):
        ours.append(sslrun_img_per_s(cfg, args.steps, args.out))
        plain.append(plain_img_per_s(cfg, args.steps, precision, channels_last))
        fp32.append(plain_img_per_s(cfg, args.steps, "32", False))
    result = {
        "backbone": describe_backbone(cfg.backbone),
        "data": cfg.data.name,
        "image_size": SSLDataModule(cfg.data, stage="pretrain").image_size,  # what auto resolved to
        "batch_size": cfg.data.batch_size,
        "precision": precision,
        "channels_last": channels_last,
        "steps": args.steps,
        "sslrun_img_per_s": round(max(ours), 1),
        "plain_img_per_s": round(max(plain), 1),
        "sslrun_vs_plain": round(max(ours) / max(plain), 3),
        "plain_fp32_img_per_s": round(max(fp32), 1),
        "sslrun_default_vs_plain_fp32": round(max(ours) / max(fp32), 3),
    }
    print(json.dumps(result))
    if args.results:
        append_row(args.results, result | provenance(this_command()))


if __name__ == "__main__":
    main()
