"""``sslrun export``: the pretrained backbone as a plain ``state_dict`` file, for use outside sslrun.

ResNet backbones keep torchvision's parameter names, so a width-1.0 ResNet with the ImageNet stem loads into
``torchvision.models.resnet18()`` with ``load_state_dict(sd, strict=False)`` (only ``fc`` missing).
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from sslrun import console
from sslrun.backbones import BACKBONES
from sslrun.checkpoint import load_pretrained
from sslrun.config import ExportConfig, backbone_config
from sslrun.errors import UserError
from sslrun.outputs import record_config


def schema(cfg: DictConfig) -> ExportConfig:
    return ExportConfig()


def run(cfg: DictConfig) -> dict[str, str | int]:
    record_config(cfg, "export")
    ckpt = load_pretrained(cfg.pretrained)
    backbone_cfg = backbone_config(ckpt.config["backbone"])
    backbone = BACKBONES.build(backbone_cfg.name, backbone_cfg, ckpt.in_channels, ckpt.image_size)
    backbone.load_state_dict(ckpt.backbone_state)
    out = Path(cfg.out).expanduser()
    if not out.parent.is_dir():
        raise UserError(f"out={cfg.out!r}: the folder {out.parent} does not exist")
    torch.save(backbone.state_dict(), out)
    summary = {
        "out": str(out),
        "backbone": f"{backbone_cfg.name} width={backbone_cfg.width} stem={backbone_cfg.stem}",
        "in_channels": ckpt.in_channels,
        "feature_dim": backbone.feature_dim,
    }
    console.print_metrics(summary, "exported backbone")
    return summary
