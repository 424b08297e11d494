"""sslrun from Python: the CLI's commands as functions, and your own ``nn.Module`` as the backbone.

    from sslrun.api import pretrain, finetune, export

    net = MyEncoder()  # (B, C, H, W) -> (B, D) features, a (B, C', H', W') map or (B, N, D) tokens (mean-pooled)
    run = pretrain(["method=byol", "data=imagefolder", "data.root=DIR"], backbone=net)
    run.path, run.metrics  # the run dir and its metrics.json; net now holds the trained weights
    finetune([f"pretrained={run.path}", "mode=linear"], backbone=MyEncoder())
    export([f"pretrained={run.path}", "out=encoder.pt"], backbone=MyEncoder())

Each call is the command line ``sslrun <command> <overrides>``: the same configs, checks, run dir, lock, resume and
checkpoints; a user error raises ``UserError`` (its message is the CLI's one line) instead of exiting. With
``backbone=``, the config's backbone is ``module`` and ``backbone.model`` records the module's class; a run trained
on a module is fine-tuned and exported by passing a module of the same class again. One process: the CLI runs DDP.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from sslrun import console
from sslrun.errors import UserError

__all__ = ["Run", "UserError", "export", "finetune", "pretrain"]


@dataclass
class Run:
    path: Path  # the run dir
    metrics: dict[str, Any]


def pretrain(overrides: list[str] | tuple[str, ...] = (), backbone: nn.Module | None = None) -> Run:
    """``sslrun pretrain <overrides>``; with ``backbone``, that module is trained (it holds the weights after)."""
    run = _run("pretrain", overrides, backbone)
    if backbone is not None:
        from sslrun.checkpoint import load_pretrained

        state = load_pretrained(str(run.path)).backbone_state
        backbone.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    return run


def finetune(overrides: list[str] | tuple[str, ...] = (), backbone: nn.Module | None = None) -> Run:
    """``sslrun finetune <overrides>``; ``backbone``: the module class a ``pretrained`` run was trained with (or,
    with ``pretrained=none``, the module to evaluate at random init)."""
    return _run("finetune", overrides, backbone)


def export(overrides: list[str] | tuple[str, ...] = (), backbone: nn.Module | None = None) -> Run:
    """``sslrun export <overrides>``; ``backbone`` as for ``finetune``. The file holds the module's own keys."""
    return _run("export", overrides, backbone)


def _run(name: str, overrides: list[str] | tuple[str, ...], backbone: nn.Module | None) -> Run:
    from sslrun.app import run_command
    from sslrun.backbones.library import given_module, qualified_name

    argv = [str(item) for item in overrides]
    if any(item.startswith(("-m", "--multirun")) for item in argv):
        raise UserError("sslrun.api runs one job; sweep from the CLI (sslrun pretrain -m ...) or call it in a loop")
    if backbone is not None:
        if not isinstance(backbone, nn.Module):
            raise UserError(f"backbone= must be a torch.nn.Module, not {type(backbone).__name__}")
        if name != "export":  # export rebuilds the architecture from the checkpoint alone
            argv = [*argv, "backbone=module", f"backbone.model={qualified_name(backbone)}"]
    saved = list(sys.argv)
    try:
        with given_module(backbone) if backbone is not None else nullcontext():
            jobs = run_command(name, f"sslrun.{name}", argv)
    except SystemExit as stop:
        if stop.code in (0, None):
            raise UserError(f"sslrun {name} printed its help or config and ran nothing") from None
        raise UserError(console.last_failure or f"sslrun {name} failed (exit status {stop.code})") from None
    finally:
        sys.argv = saved
    (job,) = jobs
    return Run(job.path, job.metrics)
