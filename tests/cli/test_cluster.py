"""Beyond one machine through the CLI: two nodes on one host, the global batch and its lr, and the multi-node and
cluster mistakes refused before anything starts."""

import json
import os
import subprocess

import pytest

from helpers.cli import SSLRUN, TINY, assert_user_error, sslrun
from helpers.processes import free_port


@pytest.mark.slow
def test_two_nodes_on_one_host_train_one_run_with_the_global_batch_and_its_lr(tmp_path):
    """trainer.num_nodes=2, one process a node (gloo), NODE_RANK each: one run dir, the first node's files in it,
    the second node's log beside them, and the lr scaled by the global batch of both nodes."""
    run = tmp_path / "run"
    args = [*TINY[:5], "trainer=debug", "trainer.strategy=ddp", "trainer.num_nodes=2", "trainer.max_steps=2"]
    args += ["optim=sgd", "optim.lr=0.8", "optim.scale_lr=linear", f"hydra.run.dir={run}"]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [SSLRUN, "pretrain", *args], cwd=tmp_path, env={**env, "NODE_RANK": str(node)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for node in (0, 1)
    ]  # fmt: skip
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-3000:]
    log = " ".join((run / "pretrain.log").read_text().split())
    global_batch = 16 * 2
    assert f"global batch {global_batch} = 16 per device (data.batch_size) x 1 device(s) x 2 node(s)" in log
    assert (
        f"peak lr {0.8 * global_batch / 256:.4g} (optim.lr=0.8 at batch 256, linear-scaled to global batch 32)" in log
    )
    assert (run / "pretrain.rank1.log").is_file() and (run / ".hydra" / "config.yaml").is_file()
    assert not list(run.glob(".hydra/rerun-*"))  # the second node wrote no Hydra files of its own
    assert json.loads((run / "metrics.json").read_text())["steps"] == 2


@pytest.mark.parametrize(
    "args,env,fragments",
    [
        (["trainer.num_nodes=2"], {}, ["trainer.num_nodes=2 but nothing gives this node its rank", "NODE_RANK"]),
        (["-m", "hydra/launcher=submitit_slurm"], {"PATH": "/usr/bin:/bin"}, ["sbatch", "submitit_local"]),
        (["method=gan", "trainer.accumulate_grad_batches=2"], {}, ["cannot accumulate gradients"]),
        (["backbone=vit_tiny", "trainer.strategy=fsdp"], {}, ["trainer.strategy=fsdp needs CUDA GPUs"]),
        (["trainer.activation_checkpointing=true"], {}, ["works with trainer.strategy=fsdp"]),
    ],
    ids=["nodes-without-ranks", "slurm-without-sbatch", "two-players-accumulating", "fsdp-on-cpu", "checkpointing"],
)
def test_cluster_mistakes_are_refused_before_anything_starts(tmp_path, args, env, fragments):
    clean = {k: v for k, v in os.environ.items() if k not in ("NODE_RANK", "SLURM_NTASKS", "GROUP_RANK")}
    proc = subprocess.run(
        [SSLRUN, "pretrain", *args, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**clean, **env},
    )  # fmt: skip
    assert_user_error(proc, *fragments)
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


def test_global_batch_counts_accumulation(tmp_path):
    proc = sslrun(
        "pretrain", *TINY, "trainer.accumulate_grad_batches=2", "trainer.max_steps=1", "optim=sgd", "optim.lr=0.4",
        f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = " ".join((tmp_path / "run" / "pretrain.log").read_text().split())
    assert "global batch 32 = 16 per device (data.batch_size) x 1 device(s) x 1 node(s) x 2 accumulated" in log
    assert "linear-scaled to global batch 32" in log


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        (["backbone=resnet18"], "shards ViT blocks"),
        (["backbone=vit_tiny", "method=byol"], "method=byol keeps an EMA teacher"),
        (["backbone=vit_tiny", "method=moco_v2"], "method=moco_v2 keeps"),
        (["backbone=vit_tiny", "method=mae"], None),
        (["backbone=timm", "backbone.model=vit_tiny_patch16_224"], None),
    ],
)
def test_fsdp_takes_vits_and_methods_without_teachers_or_queues(overrides, fragment):
    """On GPUs (trainer.accelerator=gpu, so the CPU refusal does not answer first)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from sslrun.errors import UserError
    from sslrun.pretrain import check_fsdp

    GlobalHydra.instance().clear()
    with initialize_config_module("sslrun.configs", version_base="1.3"):
        cfg = compose("pretrain", overrides=[*overrides, "trainer=gpu", "trainer.strategy=fsdp"])
    if fragment is None:
        check_fsdp(cfg)
    else:
        with pytest.raises(UserError, match=fragment):
            check_fsdp(cfg)


def test_a_cluster_without_a_default_partition_needs_one_named(tmp_path):
    """sbatch and sinfo stand-ins: sinfo lists partitions and none is the default (no '*')."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("sbatch", "exit 0"), ("sinfo", "printf 'gpu\\ncpu\\n'")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.run(
        [SSLRUN, "pretrain", "-m", "hydra/launcher=submitit_slurm", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert_user_error(proc, "no default partition", "hydra.launcher.partition", "gpu, cpu")
    assert not (tmp_path / "sweep").exists()


def test_an_unknown_logger_is_refused_with_the_choices(tmp_path):
    assert_user_error(sslrun("pretrain", "logger=comet", cwd=tmp_path), "unknown logger 'comet'", "mlflow", "wandb")
