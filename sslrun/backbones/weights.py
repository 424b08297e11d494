"""``backbone.weights=PATH``: start pretraining or fine-tuning from weights in a local file.

PATH is a ``state_dict`` file (``.pt``/``.pth``, also one wrapped as ``{"state_dict": ...}`` or ``{"model": ...}``), a
``.safetensors`` file, or an sslrun run dir, checkpoint or export. A timm or torchvision backbone takes the library's
own keys (what ``timm.create_model(...).state_dict()`` has) as well as sslrun's. Strict by default: every key must be
there with its shape; ``backbone.weights_strict=false`` loads the keys that fit and names the ones skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from sslrun.backbones import BACKBONES
from sslrun.backbones.library import LibraryBackbone
from sslrun.checkpoint import load_pretrained, pretrained_from, read_checkpoint

log = logging.getLogger(__name__)
SHOWN = 3  # keys named per kind of mismatch


def start_backbone(cfg: DictConfig, in_channels: int, image_size: int) -> nn.Module:
    """The backbone a run starts from: built from ``cfg``, then ``cfg.weights`` loaded when set."""
    backbone = BACKBONES.build(cfg.name, cfg, in_channels, image_size)
    if cfg.get("weights"):
        load_weights(backbone, str(cfg.weights), bool(cfg.weights_strict))
    return backbone


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file or run, keyed as the file keys them (an sslrun run: as its backbone does)."""
    if path.is_dir() or path.suffix == ".ckpt":
        return load_pretrained(str(path)).backbone_state
    if not path.is_file():
        raise ValueError(f"backbone.weights={str(path)!r}: no such file or run dir")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"backbone.weights: cannot read {path}: {err}") from None
    state = read_checkpoint(path)
    if isinstance(state, dict) and "hyper_parameters" in state and "state_dict" in state:
        return pretrained_from(path, state).backbone_state
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"backbone.weights: {path} holds no state_dict (a dict of tensors)")
    return state


def load_weights(backbone: nn.Module, weights: str, strict: bool = True) -> None:
    """Load ``weights`` into ``backbone``; ValueError naming the first keys that do not fit (unless not ``strict``:
    then those are skipped, and logged)."""
    path = Path(weights).expanduser()
    state = read_weights(path)
    own = backbone.state_dict()
    if isinstance(backbone, LibraryBackbone) and not any(k.startswith("model.") for k in state):
        state = {f"model.{k}": v for k, v in state.items()}  # the library's own keys
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshaped = [k for k in own if k in state and state[k].shape != own[k].shape]
    problems = [
        f"{label}: {', '.join(keys[:SHOWN])}{' ...' if len(keys) > SHOWN else ''} ({len(keys)})"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("other shape", misshaped))
        if keys
    ]
    fitting = {k: v for k, v in state.items() if k in own and k not in misshaped}
    if problems and (strict or not fitting):
        hint = "; backbone.weights_strict=false loads the keys that fit" if strict and fitting else ""
        raise ValueError(f"backbone.weights={weights!r} does not fit the backbone: {'; '.join(problems)}{hint}")
    backbone.load_state_dict(fitting, strict=False)
    if problems:
        log.warning(
            "backbone.weights: loaded %d of %d tensors from %s; skipped %s",
            len(fitting),
            len(own),
            path,
            "; ".join(problems),
        )
    else:
        log.info("backbone.weights: loaded all %d tensors from %s", len(own), path)
