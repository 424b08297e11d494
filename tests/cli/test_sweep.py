"""A -m sweep survives a failing job: the failure is recorded, the other jobs run, one summary table ends it and the
exit status says a job failed."""

import json

from helpers.cli import TINY, sslrun


def test_a_diverging_job_does_not_end_the_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    extra = ["optim=sgd", "optim.lr=1e30,0.1", "trainer.checkpoint_every_n_steps=1", f"hydra.sweep.dir={sweep}"]
    proc = sslrun("pretrain", "-m", *TINY, *extra, cwd=tmp_path)
    out, err = " ".join(proc.stdout.split()), " ".join(proc.stderr.split())
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    (first,), (second,) = sweep.glob("0_optim.lr=*"), sweep.glob("1_optim.lr=0.1")  # only what the sweep varies
    failure = json.loads((first / "failed.json").read_text())
    assert failure["status"] == 3 and "training diverged" in failure["message"]
    assert any(o.startswith("optim.lr=1e") for o in failure["overrides"]), failure["overrides"]
    assert (second / "metrics.json").is_file() and not (second / "failed.json").exists()  # the next job ran
    assert "job 0 failed (error): training diverged" in err and "1 of 2 job(s) failed: 0" in err
    assert "sweep: 2 job(s)" in out and f"sslrun report {sweep}" in out


def test_job_dirnames_keep_the_swept_keys_and_shorten_paths(monkeypatch):
    from sslrun.app import DIRNAME_MAX, SWEPT_KEYS, job_dirname

    monkeypatch.setenv(SWEPT_KEYS, "pretrained,seed")
    deep = "/a/very/deep/tree/of/runs/pretrain/2026-12-02_10-00-00/byol"
    assert job_dirname([f"pretrained={deep}", "seed=1", "data=digits", "hydra.run.dir=x"]) == "pretrained=byol,seed=1"
    monkeypatch.setenv(SWEPT_KEYS, "")
    long = job_dirname([f"method.temperature={i / 7}" for i in range(9)])
    assert len(long) == DIRNAME_MAX and long != job_dirname([f"method.temperature={i / 7}" for i in range(10)])
