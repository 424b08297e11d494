"""logger=wandb and logger=mlflow, offline: records their own formats read back, one tracker run per run dir
continued by a resumed run, the resolved config and sslrun's version in each."""

import csv
import json
import os

import pytest

from helpers.cli import TINY, assert_user_error, sslrun
from helpers.trackers import wandb_run


@pytest.mark.slow
def test_wandb_and_mlflow_write_offline_and_a_resumed_run_continues_them(tmp_path):
    run = tmp_path / "run"
    args = ["pretrain", *TINY, "logger=[csv,wandb,mlflow]", f"hydra.run.dir={run}"]
    env_free = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_"))}
    os.environ.clear()
    os.environ.update({**env_free, "HOME": str(tmp_path)})  # no W&B key: offline by default
    try:
        first = sslrun(
            *args, "trainer.max_steps=-1", "trainer.limit_train_batches=1.0", "trainer.max_epochs=1", cwd=tmp_path
        )
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        ids = json.loads((run / "trackers.json").read_text())
        again = sslrun(
            *args, "trainer.max_steps=-1", "trainer.limit_train_batches=1.0", "trainer.max_epochs=2", cwd=tmp_path
        )  # resumes
        assert again.returncode == 0 and "resuming from" in again.stdout + again.stderr, again.stderr[-3000:]
    finally:
        os.environ.clear()
        os.environ.update(env_free)
    assert json.loads((run / "trackers.json").read_text()) == ids
    with open(run / "csv" / "metrics.csv") as f:  # CSV too keeps both launches' rows (Lightning's deleted them)
        rows = [row for row in csv.DictReader(f) if row.get("train_loss")]
    assert {row["epoch"] for row in rows} == {"0", "1"}, rows

    files = sorted(run.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 2, files  # one offline record a launch, both of the one W&B run
    records = [wandb_run(f) for f in files]
    assert {r["run_id"] for r in records} == {ids["wandb"]}
    config = records[0]["config"]
    assert config["config"]["method"]["name"] == "contrastive" and config["sslrun"]["version"]
    steps = [row["trainer/global_step"] for r in records for row in r["history"] if "train_loss" in row]
    assert steps and max(steps) > 4 and min(steps) <= 4  # both launches logged the training loss

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"file:{run / 'mlruns'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert [r.info.run_id for r in client.search_runs(experiments)] == [ids["mlflow"]]
    tracked = client.get_run(ids["mlflow"])
    assert tracked.data.params["config/method/name"] == "contrastive" and "sslrun/version" in tracked.data.params
    history = client.get_metric_history(ids["mlflow"], "train_loss")
    assert len({m.step for m in history}) == 2, [m.step for m in history]  # before and after the resume


def test_wandb_online_without_a_key_is_refused(tmp_path):
    env_free = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update({**env_free, "HOME": str(tmp_path)})
    try:
        proc = sslrun("pretrain", "logger=wandb", "logger.wandb.mode=online", cwd=tmp_path)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert_user_error(proc, "logger.wandb.mode=online needs a W&B key", "WANDB_API_KEY")
