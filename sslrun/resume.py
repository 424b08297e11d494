"""``resume``: whether a run continues from a checkpoint. ``auto`` (default) continues from the run dir's
``checkpoints/last.ckpt`` when there is one; ``never`` starts fresh and refuses a run dir that holds a checkpoint;
``overwrite`` starts fresh over it; a file path continues from that checkpoint. A checkpoint written with another
config is refused, naming the keys that differ (those in ``MAY_DIFFER`` may change: more epochs, other loggers)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sslrun.callbacks.checkpoints import RUN_KEY
from sslrun.checkpoint import read_checkpoint

log = logging.getLogger(__name__)

MAY_DIFFER = (
    "resume",
    "logger",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "trainer.checkpoint_every_n_steps",
    "trainer.checkpoint_every_n_minutes",
    "data.root",
    "data.urls",
    "data.val_urls",
    "data.download",
    "data.num_workers",
    "data.cache",
    "data.cache_max_mb",
    "eval.every_n_epochs",
    "eval.knn_k",
    "eval.knn_temperature",
    "eval.precise_bn",
    "eval.max_train_images",
    "eval.max_val_images",
    "eval.initial_knn",
    "trainer.compile",
)
# Keys added after runs were already written, with the value the older code behaved as: a checkpoint without the
# key is taken to have had that value (an older run resumes after an upgrade; one with another value is refused).
ADDED_KEYS = {
    "trainer.accumulate_grad_batches": 1,
    "trainer.activation_checkpointing": False,
    "method.real_label": 1.0,
    "method.tile_size": "native",
}


@dataclass
class Resume:
    path: Path
    epochs_done: int
    step: int
    mid_epoch: bool

    def finished(self, trainer_cfg: DictConfig) -> bool:
        """Whether the checkpoint already reached the run's end (nothing left to train)."""
        if trainer_cfg.max_steps > 0 and self.step >= trainer_cfg.max_steps:
            return True
        return 0 < trainer_cfg.max_epochs <= self.epochs_done


def announce(resume: Resume | None, trainer_cfg: DictConfig) -> bool:
    """Log where the run continues from; True when that checkpoint already finished the run."""
    if resume is None:
        return False
    if resume.finished(trainer_cfg):
        log.info(
            "%s already finished this run (epoch %d, step %d): nothing to train; raise trainer.max_epochs to train "
            "on, or start again with resume=never and another hydra.run.dir",
            resume.path,
            resume.epochs_done,
            resume.step,
        )
        return True
    log.info(
        "resuming from %s: %d epochs done, step %d (resume=never and another hydra.run.dir start fresh)%s",
        resume.path,
        resume.epochs_done,
        resume.step,
        "; it was written mid-epoch, so the rest of that epoch draws a fresh shuffle" if resume.mid_epoch else "",
    )
    return False


def last_checkpoint(out_dir: Path) -> Path:
    return out_dir / "checkpoints" / "last.ckpt"


def resolve(
    setting: str, out_dir: Path, command: str, config: dict[str, Any], labelled: bool | None = None
) -> Resume | None:
    """The checkpoint this run continues from (None: a fresh start); ValueError where the setting cannot be honoured.
    ``labelled``: whether this run's data has labels (an online probe), which the checkpoint must match."""
    last = last_checkpoint(out_dir)
    if setting == "overwrite":
        return None
    if setting == "never":
        if last.is_file():
            raise ValueError(
                f"the run dir {out_dir} already holds a checkpoint ({last}); resume=auto continues it, "
                "resume=overwrite starts over in it, or pass another hydra.run.dir"
            )
        return None
    path = last if setting == "auto" else Path(setting).expanduser()
    if not path.is_file():
        return None
    ckpt = read_checkpoint(path)
    info = run_info_of(ckpt, path)
    if labelled is not None:
        probe = any(str(key).startswith("probe.") for key in ckpt.get("state_dict", {}))
        if probe != labelled:
            had, has = ("labels", "none") if probe else ("no labels", "labels")
            raise ValueError(
                f"cannot resume from {path}: it was trained on data with {had} (the online probe follows them) and "
                f"this run's data has {has} (data.root={config.get('data', {}).get('root')}); use data of the same "
                "kind, or start fresh with resume=never and another hydra.run.dir"
            )
    if info.get("command") != command:
        raise ValueError(f"{path} was not written by sslrun {command}; pass resume=never with another hydra.run.dir")
    differ = differing(info["config"], config)
    if differ:
        shown = ", ".join(f"{key} ({old!r} -> {new!r})" for key, old, new in differ[:6])
        more = f" and {len(differ) - 6} more" if len(differ) > 6 else ""
        raise ValueError(
            f"cannot resume from {path}: it was written with a different config: {shown}{more}; run the same config "
            "to continue it, or start fresh with resume=never and another hydra.run.dir"
        )
    return Resume(path, int(info["epochs_done"]), int(info["step"]), bool(info["mid_epoch"]))


def run_info_of(ckpt: Any, path: Path) -> dict[str, Any]:
    info = ckpt.get(RUN_KEY) if isinstance(ckpt, dict) else None
    if not isinstance(info, dict):
        raise ValueError(f"{path} holds no sslrun run state (written by another tool or an older sslrun); resume=never")
    return info


def differing(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for the flattened keys that differ, except those ``MAY_DIFFER``."""
    before, after = _flatten(old), _flatten(new)
    for key, value in ADDED_KEYS.items():
        if key in after and key not in before:
            before[key] = value
    keys = sorted(set(before) | set(after))
    return [
        (key, before.get(key), after.get(key))
        for key in keys
        if before.get(key) != after.get(key) and not any(key == p or key.startswith(p + ".") for p in MAY_DIFFER)
    ]


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
