"""Reading an sslrun pretraining checkpoint (a file or a run dir) back into a backbone."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from pickle import UnpicklingError
from typing import Any

import torch

BACKBONE_PREFIX = "backbone."


@dataclass
class Pretrained:
    path: Path
    config: dict[str, Any]  # the whole resolved pretrain config
    in_channels: int
    image_size: int
    backbone_state: dict[str, torch.Tensor]
    normalization: dict | None = None  # {"mean": [...], "std": [...]} of pixels in [0, 1]; None in older checkpoints


def resolve_path(pretrained: str) -> Path:
    """A checkpoint file, or a run dir holding ``checkpoints/last.ckpt``."""
    path = Path(pretrained).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise ValueError(
            f"pretrained={pretrained!r}: no checkpoint at {path}; pass a .ckpt file, a pretrain run dir, or none"
        )
    return path


def read_checkpoint(path: Path) -> Any:
    """The checkpoint file's contents on the CPU (plain types and tensors only); ValueError when it cannot be read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as err:
        reason = " ".join(str(err).split())[:160]
        raise ValueError(f"cannot read checkpoint {path} (truncated or not a checkpoint?): {reason}") from None


def load_pretrained(pretrained: str) -> Pretrained:
    path = resolve_path(pretrained)
    return pretrained_from(path, read_checkpoint(path))


def pretrained_from(path: Path, ckpt: Any) -> Pretrained:
    """The sslrun pretrain checkpoint ``ckpt`` read from ``path``; ValueError when it is not one."""
    hparams = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    state = ckpt.get("state_dict", {}) if isinstance(ckpt, dict) else {}
    if "cfg" not in hparams or not any(k.startswith(BACKBONE_PREFIX) for k in state):
        raise ValueError(f"{path} is not an sslrun pretrain checkpoint (no backbone weights or config in it)")
    backbone_state = {k[len(BACKBONE_PREFIX) :]: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}
    sizes = int(hparams["in_channels"]), int(hparams["image_size"])
    return Pretrained(path, hparams["cfg"], *sizes, backbone_state, hparams.get("normalization"))
