"""One process per run dir: a second copy of a command stops at once, naming the holder; a dead holder's lock is
taken over; a requeued job takes over its own earlier attempt's."""

import json
import socket
import subprocess
import time

from helpers.cli import SSLRUN, TINY, assert_user_error, sslrun
from sslrun.lock import LOCK, stale_reason


def test_a_second_copy_of_a_command_on_one_run_dir_stops_at_once(tmp_path):
    run = tmp_path / "run"
    overrides = [*TINY, "trainer.max_epochs=40", "trainer.max_steps=-1", f"hydra.run.dir={run}"]  # some seconds
    first = subprocess.Popen(
        [SSLRUN, "pretrain", *overrides], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.time() + 120
        while not (run / LOCK).exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert (run / LOCK).exists(), "the first run never took the lock"
        holder = json.loads((run / LOCK).read_text())
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
        second = sslrun("pretrain", *overrides, cwd=tmp_path)
        assert first.poll() is None, "the first run ended before the second started: lengthen it"
        assert_user_error(second, f"is in use by PID {first.pid} on {socket.gethostname()}", "hydra.run.dir")
    finally:
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, out[-2000:] + err[-2000:]
    assert not (run / LOCK).exists() and (run / "metrics.json").is_file()
    assert not list((run / "checkpoints").glob(".*partial"))


def test_a_dead_holders_lock_is_taken_over_with_a_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    (run / LOCK).write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(), "started": "then"}))
    proc = sslrun("pretrain", *TINY, f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"process {gone.pid} no longer exists" in proc.stdout + proc.stderr
    assert not (run / LOCK).exists()


def test_a_requeued_job_takes_over_its_earlier_attempt_but_not_another_job(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    elsewhere = {"pid": 1, "host": "another-node", "started": "then"}
    assert "earlier attempt of job 4242" in stale_reason({**elsewhere, "job": "4242"})
    assert stale_reason({**elsewhere, "job": "17"}) is None  # another job, another host: may be running
    assert stale_reason(elsewhere) is None
