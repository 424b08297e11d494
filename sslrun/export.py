"""``sslrun export``: the pretrained backbone as a plain ``state_dict`` file, for use outside sslrun.

``format=torch`` writes ``torch.save(state_dict)``; ``format=safetensors`` a safetensors file whose string metadata
names the backbone (name, width, stem, in_channels, image_size, feature_dim), the pretraining method, the source
checkpoint and the ``load`` recipe; ``format=auto`` picks safetensors for an ``out`` ending in ``.safetensors``.
A ``backbone=timm|torchvision`` model is written with the library's own keys (``format=timm|torchvision``: torch.save),
and ``load`` is the Python that builds the library's model and loads the file into it.

ResNet backbones keep torchvision's parameter and buffer names, with no extra keys, so a width-1.0 ResNet loads into
``torchvision.models.resnet18/34/50()`` with ``load_state_dict(sd, strict=True)`` after one documented change: its
``fc`` becomes ``nn.Identity()`` (our backbone is headless), and for the CIFAR stem (or inputs other than 3 channels)
its ``conv1`` (and ``maxpool``) become ours. The summary printed after export spells out that recipe (``load``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from safetensors.torch import save as safetensors_bytes
from torch import nn

from sslrun import console
from sslrun.backbones import BACKBONES
from sslrun.backbones.library import LibraryBackbone, describe, load_snippet
from sslrun.backbones.resnet import ResNet
from sslrun.checkpoint import load_pretrained
from sslrun.config import ExportConfig, backbone_config
from sslrun.outputs import check_writable_output, record_config, write_atomically


def schema(cfg: DictConfig) -> ExportConfig:
    return ExportConfig()


LIBRARY_FORMATS = ("timm", "torchvision")


def resolve_format(requested: str, out: Path) -> str:
    """``safetensors``, ``torch`` or a library's name; ``auto`` goes by the suffix of ``out``."""
    if requested != "auto":
        return requested
    return "safetensors" if out.suffix.lower() == ".safetensors" else "torch"


def load_recipe(name: str, backbone: nn.Module, width: float) -> str:
    """How to load the exported state_dict outside sslrun: the torchvision model and the changes that make
    ``strict=True`` hold, or why torchvision has no equivalent."""
    if not isinstance(backbone, ResNet):
        return f"sslrun's {name} only (torchvision has no equivalent)"
    if width != 1.0:
        return (
            f"not into torchvision: width={width} changes the channel counts (torchvision's ResNets are width 1.0); "
            f"use sslrun's {name} with backbone.width={width}"
        )
    channels, planes = backbone.conv1.in_channels, backbone.conv1.out_channels
    steps = [f"torchvision.models.{name}()", "fc=Identity"]
    if backbone.stem == "cifar":
        steps += [f"conv1=Conv2d({channels},{planes},3,1,1,bias=False)", "maxpool=Identity"]
    elif channels != 3:
        steps.append(f"conv1=Conv2d({channels},{planes},7,2,3,bias=False)")
    return "; ".join([*steps, "strict=True"])


def check(cfg: DictConfig) -> None:
    """Before any work (``sslrun.app``): ``out`` must not destroy anything."""
    check_writable_output(Path(cfg.out).expanduser(), "out", cfg.overwrite)


def input_metadata(ckpt) -> dict[str, str]:
    """What the encoder expects as input: channel order and the normalisation of pixels scaled to [0, 1]
    (``(x - mean) / std`` per channel); empty for a checkpoint written before sslrun recorded it."""
    order = {1: "grayscale", 3: "RGB"}.get(ckpt.in_channels, f"{ckpt.in_channels} channels")
    if not ckpt.normalization:
        return {"channel_order": order}
    mean, std = (",".join(f"{v:.6g}" for v in ckpt.normalization[k]) for k in ("mean", "std"))
    return {"channel_order": order, "input_mean": mean, "input_std": std}


def run(cfg: DictConfig) -> dict[str, str | int]:
    record_config(cfg, "export")
    out = Path(cfg.out).expanduser()
    check_writable_output(out, "out", cfg.overwrite)  # again: the file may have appeared since the pre-flight
    ckpt = load_pretrained(cfg.pretrained)
    backbone_cfg = backbone_config(ckpt.config["backbone"])
    backbone = BACKBONES.build(backbone_cfg.name, backbone_cfg, ckpt.in_channels, ckpt.image_size)
    backbone.load_state_dict(ckpt.backbone_state)
    stem = backbone.stem if isinstance(backbone, ResNet) else backbone_cfg.stem
    file_format = resolve_format(cfg.format, out)
    library = isinstance(backbone, LibraryBackbone)
    if file_format in LIBRARY_FORMATS and (not library or backbone.library != file_format):
        raise ValueError(
            f"format={file_format} exports a backbone={file_format} model; this run's backbone is "
            f"{backbone_cfg.name}: use format=torch or format=safetensors"
        )
    if library:  # the library's own model and keys
        state = backbone.model.state_dict()
        recipe = load_snippet(backbone, str(out), file_format == "safetensors")
    else:
        state = backbone.state_dict()
        recipe = load_recipe(backbone_cfg.name, backbone, backbone_cfg.width)
    if file_format == "safetensors":
        metadata = {
            "backbone": backbone_cfg.name,
            **({"library": backbone.library, "model": backbone.model_name} if library else {}),
            "width": str(backbone_cfg.width),
            "stem": stem,
            "in_channels": str(ckpt.in_channels),
            "image_size": str(ckpt.image_size),
            "feature_dim": str(backbone.feature_dim),
            "method": str(ckpt.config["method"]["name"]),
            "pretrained": str(ckpt.path.resolve()),
            "load": recipe,
            **input_metadata(ckpt),
        }
        # save_file refuses tensors that share memory or are not contiguous: each gets its own contiguous copy
        contiguous = {k: v.clone(memory_format=torch.contiguous_format) for k, v in state.items()}
        write_atomically(out, lambda f: f.write(safetensors_bytes(contiguous, metadata)))
    else:
        write_atomically(out, lambda f: torch.save(state, f))  # timm, torchvision: the library's keys, torch.save
    summary = {
        "out": str(out),
        "format": file_format,
        "backbone": describe(backbone_cfg, stem),
        "in_channels": ckpt.in_channels,
        "feature_dim": backbone.feature_dim,
        "load": recipe,
        **input_metadata(ckpt),
    }
    if library and backbone_cfg.stem == "cifar":
        summary["differs"] = (
            f"backbone.stem=cifar: not {backbone.library}'s own {backbone.model_name} (stride-1 first convolution, "
            "no stem max-pool); the load line makes the same changes after loading"
        )
    console.print_metrics(summary, "exported backbone")
    return summary
