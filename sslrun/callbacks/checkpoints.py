"""``checkpoints/last.ckpt``: written atomically (a temporary file, then a rename) at every epoch end, every
``trainer.checkpoint_every_n_steps`` steps and ``trainer.checkpoint_every_n_minutes`` minutes, and once more when the
run is told to stop (SIGTERM from a scheduler, Ctrl-C), before it exits. Each checkpoint also carries the run's
resolved config (what ``resume`` compares) and the random number generators' states, so a run resumed from an
epoch-end checkpoint draws the same batches and augmentations as one never interrupted."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from sslrun.cluster import Preemption
from sslrun.errors import Interrupted, MachineFault, Preempted, machine_fault
from sslrun.outputs import write_atomically

RUN_KEY = "sslrun"  # the checkpoint's entry holding command, config, progress and RNG states


class AtomicCheckpointIO(TorchCheckpointIO):
    """A crash while saving leaves the previous checkpoint intact: the new one only replaces it once complete."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_atomically(path, lambda f: torch.save(checkpoint, f))
        except OSError as err:
            fault = machine_fault(err, str(path))
            if fault is None:
                raise
            kept = f"; the last good checkpoint is kept: {path}" if path.is_file() else ""
            raise MachineFault(f"{fault}{kept}") from None


def rng_states() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(numpy_state[1].copy()), "pos": int(numpy_state[2])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(("MT19937", states["numpy"]["keys"].numpy(), states["numpy"]["pos"], 0, 0.0))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class LastCheckpoint(pl.Callback):
    """Place it after the kNN monitor and image grids (it saves what they computed at an epoch end) and before the
    progress bar."""

    def __init__(
        self,
        path: Path,
        command: str,
        config: dict[str, Any],
        every_n_steps: int | None = None,
        every_n_minutes: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.command = command
        self.config = config
        self.every_n_steps = every_n_steps
        self.every_n_seconds = None if every_n_minutes is None else 60.0 * every_n_minutes
        self._epoch_end = False
        self._saved_at = time.monotonic()
        self._ctrl_c = False
        self._previous_handler: Any = None
        self.preemption = Preemption()

    def save(self, trainer: pl.Trainer, epoch_end: bool) -> None:
        self._epoch_end = epoch_end
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved_at = time.monotonic()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._saved_at = time.monotonic()
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGINT, self._on_ctrl_c)
            self.preemption.start()

    def _on_ctrl_c(self, signum: int, frame: Any) -> None:
        if self._ctrl_c:  # a second Ctrl-C: stop at once, with sslrun's line and status (not Lightning's exit 1)
            raise Interrupted(
                f"stopped by a second Ctrl-C, without saving; the last checkpoint is kept ({self.path}): run the same "
                "command again to continue from it",
                signal.SIGINT,
            )
        self._ctrl_c = True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        flags = [self.preemption.requested, trainer.received_sigterm, self._ctrl_c, self._time_due()]
        if trainer.world_size > 1:  # every rank takes part in a save, so every rank decides alike (one all-reduce)
            summed = trainer.strategy.reduce(
                torch.tensor(flags, dtype=torch.float32, device=pl_module.device), reduce_op="sum"
            )
            flags = [bool(v) for v in summed.tolist()]
        preempted, sigterm, ctrl_c, time_due = flags
        stop = signal.SIGTERM if sigterm else signal.SIGINT if ctrl_c else 0
        steps_due = self.every_n_steps is not None and trainer.global_step % self.every_n_steps == 0
        if preempted or stop or steps_due or time_due:
            self.save(trainer, epoch_end=False)
        if preempted:
            self._restore_handler()
            raise Preempted(
                f"preempted ({signal.Signals(self.preemption.signum).name}) at step {trainer.global_step} (epoch "
                f"{trainer.current_epoch}); saved {self.path}: the requeued job, or the same command, continues it",
                self.preemption.signum,
                self.preemption,
            )
        if stop:
            raise Interrupted(
                f"stopped by {signal.Signals(stop).name} at step {trainer.global_step} (epoch {trainer.current_epoch});"
                f" saved {self.path}: run the same command again to continue (resume=auto)",
                stop,
            )

    def _time_due(self) -> bool:
        return self.every_n_seconds is not None and time.monotonic() - self._saved_at >= self.every_n_seconds

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The epoch's metrics are reduced across ranks when first read; read them here, on every rank, so that rank
        # 0's progress bar (after this callback) does not start that reduction alone while the others wait at the
        # save's barrier.
        _ = trainer.callback_metrics
        self.save(trainer, epoch_end=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handler()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_handler()

    def _restore_handler(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None
            self.preemption.stop()

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[RUN_KEY] = {
            "command": self.command,
            "config": self.config,
            "epochs_done": trainer.current_epoch + int(self._epoch_end),
            "mid_epoch": not self._epoch_end,
            "step": trainer.global_step,
            "rng": rng_states(),
        }

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        set_rng_states(checkpoint[RUN_KEY]["rng"])
