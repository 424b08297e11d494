"""Runs that die come back: resume after SIGKILL equals an uninterrupted run, SIGTERM writes a checkpoint and exits,
a checkpoint from another config is refused, checkpoints are written atomically, and a diverging loss stops the run
with its last good checkpoint."""

import errno
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from helpers.cli import SSLRUN, TINY, sslrun
from sslrun.callbacks.checkpoints import RUN_KEY, AtomicCheckpointIO
from sslrun.callbacks.knn import collapse_warning
from sslrun.errors import MachineFault
from sslrun.resume import MAY_DIFFER, Resume, differing

# Deterministic fp32 on digits (in memory: views made a batch at a time), 44 steps per epoch, no time-based saves.
RUN = [
    "data.batch_size=32",
    "data.num_workers=0",
    "backbone.width=0.25",
    "trainer=debug",
    "trainer.max_steps=-1",
    "trainer.limit_train_batches=1.0",
    "trainer.max_epochs=3",
    "trainer.checkpoint_every_n_minutes=null",
]


def start(run_dir: Path, *extra: str) -> subprocess.Popen:
    args = [SSLRUN, "pretrain", *RUN, *extra, f"hydra.run.dir={run_dir}"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=run_dir.parent)


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out + err


def run_info(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)[RUN_KEY]


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while not path.is_file():
        assert proc.poll() is None, finish(proc)[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.002)


@pytest.mark.slow
def test_a_killed_run_resumed_by_the_same_command_ends_as_an_uninterrupted_run(tmp_path):
    whole = tmp_path / "whole"
    status, log = finish(start(whole))
    assert status == 0, log[-3000:]
    expected = json.loads((whole / "metrics.json").read_text())

    killed = tmp_path / "killed"
    proc = start(killed)
    checkpoint = killed / "checkpoints" / "last.ckpt"
    wait_for(checkpoint, proc)
    time.sleep(0.05)  # into the second epoch (an epoch takes longer than a second here)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists()
    info = run_info(checkpoint)
    assert info["epochs_done"] == 1 and not info["mid_epoch"] and info["step"] == 44

    status, log = finish(start(killed))
    assert status == 0, log[-3000:]
    assert "resuming from" in log and "1 epochs done, step 44" in " ".join(log.split())
    resumed = json.loads((killed / "metrics.json").read_text())
    assert resumed["steps"] == expected["steps"] == 132 and resumed["epochs"] == expected["epochs"] == 3
    assert resumed["train_loss"] == pytest.approx(expected["train_loss"], abs=1e-6)
    for key in ("knn_top1", "knn_top1_best", "linear_top1", "rankme"):
        assert resumed[key] == pytest.approx(expected[key], abs=1e-6), key
    assert resumed["resumed_from_step"] == 44

    status, log = finish(start(killed))  # a third time: already finished, nothing trained, results kept
    assert status == 0 and "already finished this run" in " ".join(log.split())
    assert json.loads((killed / "metrics.json").read_text()) == resumed


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_mid_epoch_and_the_rerun_completes_the_schedule(tmp_path):
    run = tmp_path / "run"
    proc = start(run, "trainer.checkpoint_every_n_steps=50")
    checkpoint = run / "checkpoints" / "last.ckpt"
    wait_for(checkpoint, proc)  # the epoch-end checkpoint at step 44
    while run_info(checkpoint)["step"] < 50:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    status, log = finish(proc)
    assert status == 128 + signal.SIGTERM, log[-3000:]
    assert "Traceback" not in log and "stopped by SIGTERM" in log and "run the same command again" in log
    info = run_info(checkpoint)
    assert info["mid_epoch"] and 50 <= info["step"] < 88, info["step"]
    status, log = finish(start(run, "trainer.checkpoint_every_n_steps=50"))
    assert status == 0, log[-3000:]
    assert "the rest of that epoch draws a fresh shuffle" in " ".join(log.split())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 132 and metrics["epochs"] == 3


def test_a_checkpoint_from_another_config_is_refused_naming_the_keys(tmp_path):
    run = tmp_path / "run"
    status, log = finish(start(run, "trainer.max_epochs=1", "data.limit=64", "data.batch_size=16"))
    assert status == 0, log[-3000:]
    status, log = finish(start(run, "trainer.max_epochs=1", "data.limit=64", "data.batch_size=16", "optim.lr=0.5"))
    message = " ".join(log.split())
    assert status == 2 and "Traceback" not in log
    assert "it was written with a different config: optim.lr (1.2 -> 0.5)" in message
    status, log = finish(start(run, "trainer.max_epochs=1", "data.limit=64", "data.batch_size=16", "resume=never"))
    assert status == 2 and "already holds a checkpoint" in " ".join(log.split())
    status, log = finish(start(run, "trainer.max_epochs=2", "data.limit=64", "data.batch_size=16"))  # more epochs
    assert status == 0 and json.loads((run / "metrics.json").read_text())["epochs"] == 2, log[-3000:]


def test_differing_ignores_what_may_change_and_names_the_rest():
    old = {"method": {"temperature": 0.2}, "trainer": {"max_epochs": 8, "precision": "32"}, "seed": 0}
    new = {"method": {"temperature": 0.5}, "trainer": {"max_epochs": 16, "precision": "bf16-mixed"}, "seed": 0}
    assert differing(old, new) == [("method.temperature", 0.2, 0.5), ("trainer.precision", "32", "bf16-mixed")]
    assert "trainer.max_epochs" in MAY_DIFFER and differing(old, old) == []
    assert differing({"a": 1}, {"a": 1, "b": 2}) == [("b", None, 2)]
    # a run written before a key existed resumes when the key keeps the value the older code behaved as
    before_the_key = {"trainer": {"max_epochs": 1}}
    assert differing(before_the_key, {"trainer": {"max_epochs": 1, "accumulate_grad_batches": 1}}) == []
    assert differing(before_the_key, {"trainer": {"max_epochs": 1, "accumulate_grad_batches": 2}}) == [
        ("trainer.accumulate_grad_batches", 1, 2)
    ]


def test_a_checkpoint_is_finished_by_epochs_or_steps():
    trainer = type("T", (), {"max_epochs": 3, "max_steps": -1})
    assert Resume(Path("x"), 3, 132, False).finished(trainer)
    assert not Resume(Path("x"), 2, 88, False).finished(trainer)
    trainer.max_steps = 50
    assert Resume(Path("x"), 1, 50, True).finished(trainer)


@pytest.mark.parametrize(
    "error,expected",
    [
        (OSError("an error of no errno"), OSError),
        (OSError(errno.ENOSPC, "No space left on device"), MachineFault),  # once: a traceback and a partial file left
    ],
)
def test_a_failed_save_keeps_the_previous_checkpoint_and_leaves_no_partial_file(tmp_path, monkeypatch, error, expected):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)

    def dies_halfway(obj, f):
        f.write(b"partial")
        raise error

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(expected) as err:
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1} and list(tmp_path.iterdir()) == [path]
    if expected is MachineFault:
        assert err.value.status == 4 and "No space left on device; free space on its disk" in str(err.value)
        assert f"the last good checkpoint is kept: {path}" in str(err.value)


def test_an_absurd_learning_rate_ends_with_the_divergence_line_and_a_readable_checkpoint(tmp_path):
    run = tmp_path / "run"
    extra = ["data.limit=64", "data.batch_size=16", "optim=sgd", "optim.lr=1e30", "trainer.checkpoint_every_n_steps=1"]
    status, log = finish(start(run, *extra))
    message = " ".join(log.split())
    assert status == 3 and "Traceback" not in log, log[-3000:]
    assert "training diverged: the loss is nan at step 1 (epoch 0)" in message
    assert f"the last good checkpoint is kept: {run / 'checkpoints' / 'last.ckpt'}" in message
    from sslrun.checkpoint import load_pretrained

    kept = load_pretrained(str(run))
    assert all(torch.isfinite(v).all() for v in kept.backbone_state.values() if v.is_floating_point())
    assert run_info(run / "checkpoints" / "last.ckpt")["step"] == 1


def test_rankme_warns_at_collapse_and_at_a_steep_fall():
    assert collapse_warning(1.5, 1.5, 128) is not None
    assert collapse_warning(5.0, 28.0, 128) is not None
    assert collapse_warning(20.0, 28.0, 128) is None
    assert "at most 128" in collapse_warning(1.2, 30.0, 128)


def test_a_full_finetune_resumes_too(tmp_path):
    args = ["finetune", "mode=full", *TINY, "trainer.max_steps=-1", f"hydra.run.dir={tmp_path / 'ft'}"]
    first = sslrun(*args, "trainer.max_epochs=1", cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert run_info(tmp_path / "ft" / "checkpoints" / "last.ckpt")["command"] == "finetune"
    second = sslrun(*args, "trainer.max_epochs=2", cwd=tmp_path)
    log = " ".join((second.stdout + second.stderr).split())
    assert second.returncode == 0 and "resuming from" in log and "1 epochs done" in log, log[-3000:]
    assert run_info(tmp_path / "ft" / "checkpoints" / "last.ckpt")["epochs_done"] == 2


def test_a_rerun_never_rewrites_what_the_run_was(tmp_path):
    """Once, a finished run met again with other (allowed) settings said "already finished" and rewrote its
    config.yaml with settings it never trained with."""
    run = tmp_path / "run"
    status, log = finish(start(run, "data.limit=64", "data.batch_size=16"))
    assert status == 0, log[-3000:]
    trained = (run / "config.yaml").read_text()
    composed = (run / ".hydra" / "config.yaml").read_text()
    status, log = finish(start(run, "data.limit=64", "data.batch_size=16", "logger=csv", "eval.knn_k=5"))
    assert status == 0 and "already finished" in log, log[-3000:]
    assert (run / "config.yaml").read_text() == trained
    assert (run / ".hydra" / "config.yaml").read_text() == composed  # Hydra's own files of the run, too
    (hydra_rerun,) = (run / ".hydra").glob("rerun-*/config.yaml")
    assert "knn_k: 5" in hydra_rerun.read_text()
    (rerun,) = run.glob("config.rerun-*.yaml")
    assert "knn_k: 5" in rerun.read_text() and "knn_k: 5" not in trained and rerun.name in " ".join(log.split())
    assert "${" not in trained  # stored resolved


def test_ctrl_c_twice_ends_with_sslruns_line_and_status_130(tmp_path):
    """Once, a second Ctrl-C ended with Lightning's message alone and exit status 1."""
    run = tmp_path / "run"
    proc = start(run)
    wait_for(run / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    status, log = finish(proc)
    assert status == 130 and "Traceback" not in log and "Detected KeyboardInterrupt" not in log, log[-3000:]
    assert "stopped by" in log and "run the same command again" in " ".join(log.split())


def test_a_resume_that_would_change_what_the_checkpoint_holds_is_refused(tmp_path):
    """Once, resuming after data.root moved from a labelled to an unlabelled folder ended in a state_dict traceback."""
    from sslrun.resume import resolve

    config = {"data": {"root": "/new/folder"}, "seed": 0}
    state = {"backbone.w": torch.zeros(1), "probe.head.weight": torch.zeros(1)}
    info = {"command": "pretrain", "config": config, "epochs_done": 1, "step": 4, "mid_epoch": False}
    AtomicCheckpointIO().save_checkpoint({"state_dict": state, RUN_KEY: info}, tmp_path / "checkpoints" / "last.ckpt")
    assert resolve("auto", tmp_path, "pretrain", config, labelled=True).step == 4
    with pytest.raises(ValueError, match="trained on data with labels .* this run's data has none .*/new/folder"):
        resolve("auto", tmp_path, "pretrain", config, labelled=False)
