"""The real ``sslrun`` console script: pretrain -> finetune end to end on tiny data, and user errors."""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.cli import SSLRUN, TINY, assert_user_error, sslrun


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    run = root / "pre"
    proc = sslrun("pretrain", "method=contrastive", *TINY, f"hydra.run.dir={run}", cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run


def test_pretrain_writes_the_contracted_outputs(pretrain_run):
    assert (pretrain_run / ".hydra" / "config.yaml").is_file()
    assert (pretrain_run / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((pretrain_run / "metrics.json").read_text())
    for key in ("knn_top1", "linear_top1", "linear_top5", "img_per_s", "train_loss"):
        assert key in metrics, metrics
    assert 0.0 <= metrics["knn_top1"] <= 1.0 and metrics["img_per_s"] > 0 and metrics["steps"] == 4
    assert "contrastive loss backend: chunked (requested auto)" in (pretrain_run / "pretrain.log").read_text()
    assert (pretrain_run / "csv" / "metrics.csv").is_file()
    assert list((pretrain_run / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("pretrained,mode", [("run", "linear"), ("none", "linear"), ("ckpt", "full")])
def test_finetune_reports_top1_top5(pretrain_run, tmp_path, pretrained, mode):
    source = {"run": str(pretrain_run), "ckpt": str(pretrain_run / "checkpoints" / "last.ckpt"), "none": "none"}
    extra = [] if pretrained != "none" else ["backbone=convnet", "backbone.width=0.25"]
    args = [
        f"pretrained={source[pretrained]}",
        f"mode={mode}",
        "data.limit=64",
        "data.batch_size=16",
        "data.num_workers=0",
        "trainer=debug",
        f"hydra.run.dir={tmp_path / 'ft'}",
        *extra,
    ]
    proc = sslrun("finetune", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0 and metrics["mode"] == mode
    assert "convnet width=0.25" in metrics["backbone"]


def test_finetune_loads_the_pretrained_weights(pretrain_run):
    from sslrun.checkpoint import load_pretrained

    ckpt = load_pretrained(str(pretrain_run))
    state = torch.load(pretrain_run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    key = next(iter(ckpt.backbone_state))
    assert torch.equal(ckpt.backbone_state[key], state["backbone." + key])
    assert ckpt.config["backbone"]["name"] == "convnet"


def test_user_errors_exit_2_with_one_clear_line(tmp_path):
    assert_user_error(sslrun("pretrain", "trainer.max_epoch=3", cwd=tmp_path), "trainer.max_epoch", "max_epochs")
    assert_user_error(sslrun("pretrain", "method=simclrr", cwd=tmp_path), "unknown method 'simclrr'", "contrastive")
    assert_user_error(sslrun("pretrian", cwd=tmp_path), "unknown command 'pretrian'", "did you mean 'pretrain'")
    missing = tmp_path / "nowhere"
    assert_user_error(sslrun("finetune", f"pretrained={missing}", cwd=tmp_path), "no checkpoint at")
    assert_user_error(
        sslrun("pretrain", "data=imagefolder", f"data.root={missing}", *TINY[3:], cwd=tmp_path), str(missing)
    )
    mae_on_a_resnet = sslrun("pretrain", "method=mae", "backbone=resnet18", *TINY[:3], cwd=tmp_path)
    assert_user_error(mae_on_a_resnet, "method=mae needs one of backbone=vit_tiny, vit_small", "not backbone=resnet18")
    assert_user_error(sslrun("finetune", "eval.layer=layer5", cwd=tmp_path), "eval.layer='layer5'", "layer1")
    zero = sslrun("pretrain", "method.temperature=0", cwd=tmp_path)
    assert_user_error(zero, "method.temperature=0.0 must be a number > 0")
    assert zero.stdout == ""  # refused before the config tree is printed or any data is read


def test_finetune_on_data_with_other_channels_names_the_pretraining_data(pretrain_run, tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for label in ("a", "b"):
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (40 * i, 100, 200)).save(folder / f"{i}.png")
    args = [f"pretrained={pretrain_run}", "data=imagefolder", f"data.root={tmp_path / 'images'}", "data.batch_size=2"]
    proc = sslrun("finetune", *args, "data.num_workers=0", "trainer=debug", cwd=tmp_path)
    assert_user_error(proc, "pretrained on data=digits (1-channel images)", "pass data=digits")


def test_truncated_checkpoint_is_a_user_error(pretrain_run, tmp_path):
    data = (pretrain_run / "checkpoints" / "last.ckpt").read_bytes()
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(data[: len(data) // 2])
    assert_user_error(sslrun("finetune", f"pretrained={broken}", cwd=tmp_path), "cannot read checkpoint")


def test_export_writes_torch_or_safetensors_by_the_suffix_of_out(pretrain_run, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    stored = torch.load(pretrain_run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    backbone = {k[len("backbone.") :]: v for k, v in stored.items() if k.startswith("backbone.")}
    files = {"torch": tmp_path / "encoder.pt", "safetensors": tmp_path / "encoder.safetensors"}
    for written, out in files.items():  # format=auto
        proc = sslrun("export", f"pretrained={pretrain_run}", f"out={out}", cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert written in proc.stdout and "torchvision has no equivalent" in " ".join(proc.stdout.split())
    for exported in (torch.load(files["torch"], weights_only=True), load_file(files["safetensors"])):
        assert exported.keys() == backbone.keys()
        assert all(torch.equal(v, backbone[k]) for k, v in exported.items())
    with safe_open(files["safetensors"], "pt") as file:
        metadata = file.metadata()
    assert metadata["backbone"] == "convnet" and metadata["width"] == "0.25" and metadata["feature_dim"] == "64"
    assert metadata["in_channels"] == "1" and metadata["image_size"] == "32" and metadata["method"] == "contrastive"
    assert metadata["pretrained"] == str((pretrain_run / "checkpoints" / "last.ckpt").resolve())
    assert {"stem", "load"} <= metadata.keys() and metadata["channel_order"] == "grayscale"
    mean, std = float(metadata["input_mean"]), float(metadata["input_std"])
    assert 0 < mean < 1 and 0 < std < 1  # of pixels in [0, 1], as the encoder was trained on them
    assert_user_error(sslrun("export", f"out={files['torch']}", cwd=tmp_path), "missing value for pretrained")
    bogus = sslrun("export", f"pretrained={pretrain_run}", "format=bogus", cwd=tmp_path)
    assert_user_error(bogus, "format='bogus' must be one of: auto, safetensors, torch")


def test_export_never_destroys_a_run_nor_an_existing_file(pretrain_run, tmp_path):
    """Once, export overwrote a run's own training checkpoint with a bare state_dict (and the run was lost)."""
    ckpt = pretrain_run / "checkpoints" / "last.ckpt"
    before = ckpt.read_bytes()
    for out in (ckpt, pretrain_run / "checkpoints" / "encoder.pt"):
        refused = sslrun("export", f"pretrained={pretrain_run}", f"out={out}", "overwrite=true", cwd=tmp_path)
        assert_user_error(refused, "is inside the checkpoints of run", str(pretrain_run))
    assert ckpt.read_bytes() == before and not (pretrain_run / "checkpoints" / "encoder.pt").exists()
    assert_user_error(sslrun("export", f"pretrained={pretrain_run}", f"out={tmp_path}", cwd=tmp_path), "is a directory")
    existing = tmp_path / "mine.pt"
    existing.write_bytes(b"keep me")
    refused = sslrun("export", f"pretrained={pretrain_run}", f"out={existing}", cwd=tmp_path)
    assert_user_error(refused, "exists; pass overwrite=true")
    assert existing.read_bytes() == b"keep me"
    replaced = sslrun("export", f"pretrained={pretrain_run}", f"out={existing}", "overwrite=true", cwd=tmp_path)
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert torch.load(existing, weights_only=True).keys() and not list(tmp_path.glob(".mine.pt.*"))


def test_finetune_on_a_label_fraction_records_the_images_it_used(pretrain_run, tmp_path):
    args = ["data.limit=64", "data.batch_size=4", "data.num_workers=0", "trainer=debug", f"hydra.run.dir={tmp_path}"]
    bound = "eval.max_val_images=20"  # evaluation on a bounded subset of the val split, said in the log
    proc = sslrun("finetune", f"pretrained={pretrain_run}", *args, "data.label_fraction=0.1", bound, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # the 64 train images hold fewer than 15 of each of the 10 classes: one image per class
    assert metrics["label_fraction"] == 0.1 and metrics["labelled_images"] == 10
    assert metrics["eval_train_images"] == 10 and metrics["eval_val_images"] == 20
    assert "evaluation uses 20 of the 64 val images" in (tmp_path / "finetune.log").read_text()
    for fraction in ("0", "1.5"):
        tune = sslrun("finetune", f"data.label_fraction={fraction}", cwd=tmp_path)
        assert_user_error(tune, f"data.label_fraction={float(fraction)} must be in (0, 1]")
    pretrain = sslrun("pretrain", "data.label_fraction=0.5", *args, cwd=tmp_path)
    assert_user_error(pretrain, "data.label_fraction=0.5 is for sslrun finetune; pretraining uses no labels")


def test_cfg_job_and_list_and_help(tmp_path):
    proc = sslrun("pretrain", "--cfg", "job", "optim.lr=0.7", cwd=tmp_path)
    assert proc.returncode == 0 and "lr: 0.7" in proc.stdout
    assert_user_error(sslrun("pretrain", "--cfg", "job", "optim.lrr=0.7", cwd=tmp_path), "unknown key 'optim.lrr'")
    listing = sslrun("list", cwd=tmp_path)
    assert listing.returncode == 0
    for name in ("contrastive", "moco_v2", "dino", "nnclr", "resnet18", "digits", "imagefolder", "lars", "chunked"):
        assert name in listing.stdout
    top = sslrun("--help", cwd=tmp_path)
    assert top.returncode == 0 and "pretrain" in top.stdout and "finetune" in top.stdout
    sub = sslrun("pretrain", "--help", cwd=tmp_path)
    from sslrun.methods import METHODS

    assert sub.returncode == 0 and f"method: {', '.join(METHODS.names())}" in sub.stdout


@pytest.mark.slow
def test_pretrain_runs_ddp_on_two_cpu_processes(tmp_path):
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=false"]
    proc = sslrun("pretrain", *TINY[:5], *ddp, "trainer.max_steps=2", f"hydra.run.dir={tmp_path / 'ddp'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and "knn_top1" in metrics
    # the same command with a longer schedule resumes on both ranks
    proc = sslrun("pretrain", *TINY[:5], *ddp, "trainer.max_steps=4", f"hydra.run.dir={tmp_path / 'ddp'}", cwd=tmp_path)
    assert proc.returncode == 0 and "resuming from" in proc.stdout + proc.stderr, (
        proc.stdout[-3000:] + proc.stderr[-3000:]
    )
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["steps"] == 4


def test_multirun_sweeps_each_combination(tmp_path):
    proc = sslrun(
        "pretrain",
        "-m",
        "optim.lr=0.1,0.2",
        *TINY,
        "trainer.max_steps=1",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(list((tmp_path / "sweep").glob("*/metrics.json"))) == 2


def write_images(folder: Path, count: int, gray: bool) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("L" if gray else "RGB", (28, 28), 9 * i if gray else (9 * i, 50, 100)).save(folder / f"{i}.png")


def test_a_streamed_folder_skips_an_unreadable_image_and_counts_it(tmp_path):
    """data.cache=none decodes nothing up front: a corrupt file is met by the loader, replaced and counted."""
    root = tmp_path / "images"
    write_images(root, 24, gray=True)
    (root / "7_bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    run = tmp_path / "run"
    args = ["data=imagefolder", f"data.root={root}", "data.cache=none", "data.batch_size=4", *TINY[3:]]
    every = ["trainer.max_epochs=1", "trainer.max_steps=-1", "trainer.limit_train_batches=1.0"]  # every file read
    proc = sslrun("pretrain", *args, *every, f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["unreadable_images"] == 1
    assert "1 unreadable images skipped so far" in (run / "pretrain.log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["classes", "flat"])
def test_pretrain_on_a_folder_without_a_train_val_split(tmp_path, layout):
    """ROOT/<class>/* gets a stratified val split and the label monitors; a flat folder of unlabelled images
    pretrains with rankme instead, and finetune refuses it in one line."""
    root = tmp_path / "images"
    if layout == "classes":
        for label in ("a", "b"):
            write_images(root / label, 20, gray=True)
    else:
        write_images(root, 40, gray=True)
    run = tmp_path / "run"
    args = ["data=imagefolder", f"data.root={root}", "data.batch_size=8", *TINY[3:], f"hydra.run.dir={run}"]
    proc = sslrun("pretrain", *args, "data.views.crop_min_scale=0.5", cwd=tmp_path)  # a key the YAML leaves out
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["rankme"] >= 1.0
    resolved = (run / "config.yaml").read_text()
    assert "image_size: 32" in resolved and "recipe: small" in resolved and "batched: true" in resolved
    assert "crop_min_scale: 0.5" in resolved and "blur_p: 0.0" in resolved
    log = (run / "pretrain.log").read_text()
    assert "32 train + 8 val images" in log and "1 channel(s)" in log
    if layout == "classes":
        assert "knn_top1" in metrics and "2 classes" in log
    else:
        assert "knn_top1" not in metrics and "kNN and the online probe are skipped" in log
        tune = sslrun("finetune", f"pretrained={run}", "data=imagefolder", f"data.root={root}", *TINY[3:], cwd=tmp_path)
        assert_user_error(tune, "sslrun finetune needs labels", str(root))


# The image grids each reconstruction or generative method writes into RUN/images (one PNG per evaluation epoch).
PICTURES = {
    "adversarial_autoencoder": ["reconstruction", "samples"],
    "autoencoder": ["reconstruction"],
    "gan": ["samples"],
    "mae": ["reconstruction"],
    "vae": ["reconstruction", "samples"],
}


@pytest.mark.slow
def test_every_method_pretrains_finetunes_and_exports_through_the_cli(tmp_path, monkeypatch):
    """Every registered method through the real CLI, on the default data and on an image folder (one multirun
    each), then ``sslrun finetune`` (one multirun) and ``sslrun export`` from every digits checkpoint."""
    from sslrun import api
    from sslrun.methods import METHODS

    names = METHODS.names()
    by_backbone: dict[str, list[str]] = {}  # one sweep per backbone: mae trains ViTs only
    for name in names:
        by_backbone.setdefault((METHODS.get(name).backbones or ("convnet",))[0], []).append(name)
    root = tmp_path / "images"
    for label in ("a", "b"):
        write_images(root / label, 20, gray=False)
    sweeps = {
        "digits": [*TINY],
        "folder": ["data=imagefolder", f"data.root={root}", "data.batch_size=8", *TINY[3:]],
    }
    for (data, args), (backbone, group) in itertools.product(sweeps.items(), by_backbone.items()):
        sweep = tmp_path / data
        proc = sslrun(
            "pretrain",
            "-m",
            f"method={','.join(group)}",
            *args,
            f"backbone={backbone}",
            "trainer.max_steps=2",
            f"hydra.sweep.dir={sweep}",
            "hydra.sweep.subdir=${method.name}",
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        for name in group:
            metrics = json.loads((sweep / name / "metrics.json").read_text())
            assert metrics["steps"] == 2 and metrics["train_loss"] == metrics["train_loss"], (data, name, metrics)
            pictures = sorted(p.name.split("_epoch")[0] for p in (sweep / name / "images").glob("*.png"))
            assert pictures == PICTURES.get(name, []), (data, name, pictures)
    runs = ",".join(str(tmp_path / "digits" / name) for name in names)
    tune = sslrun(
        "finetune",
        "-m",
        f"pretrained={runs}",
        *TINY,
        "trainer.max_epochs=1",
        "eval.layer=layer2",
        f"hydra.sweep.dir={tmp_path / 'tune'}",
        "hydra.sweep.subdir=${hydra:job.num}",
        cwd=tmp_path,
    )
    assert tune.returncode == 0, tune.stdout[-3000:] + tune.stderr[-3000:]
    tuned = [json.loads(p.read_text()) for p in (tmp_path / "tune").glob("*/metrics.json")]
    assert len(tuned) == len(names) and all(m["layer"] == "layer2" and m["top1"] >= 0 for m in tuned)
    for i, name in enumerate(names):  # the CLI once, then sslrun.api's in-process export (the same command)
        out = tmp_path / f"encoder_{name}.pt"
        overrides = [f"pretrained={tmp_path / 'digits' / name}", f"out={out}"]
        if i == 0:
            export = sslrun("export", *overrides, cwd=tmp_path)
            assert export.returncode == 0, export.stdout[-3000:] + export.stderr[-3000:]
        else:
            monkeypatch.chdir(tmp_path)  # Hydra's run dir for export is relative
            api.export(overrides)
        exported = torch.load(out, weights_only=True)
        stored = torch.load(tmp_path / "digits" / name / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        assert exported.keys() == {k[len("backbone.") :] for k in stored if k.startswith("backbone.")}, name


def test_odd_paths_work_and_the_printed_commands_paste(tmp_path):
    """A run dir with a space and a non-ASCII letter: unquoted, one line saying how to quote it; quoted for Hydra,
    the run works and the commands it prints for the user run as printed."""
    import os
    import shlex

    run = tmp_path / "my runs ü" / "pre"
    assert_user_error(sslrun("pretrain", *TINY, f"hydra.run.dir={run}", cwd=tmp_path), "goes in quotes Hydra sees")
    proc = sslrun("pretrain", *TINY, f"hydra.run.dir='{run}'", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = proc.stdout.split("next:")[-1].strip().splitlines()
    finetune, report = (line.strip() for line in printed)
    assert shlex.split(finetune)[:3] == ["sslrun", "finetune", f"pretrained='{run}'"]
    env = {**os.environ, "PATH": f"{Path(SSLRUN).parent}{os.pathsep}{os.environ['PATH']}"}
    tiny = " ".join(shlex.quote(a) for a in ["data.limit=64", "data.batch_size=16", "trainer=debug"])
    for line in (f"{finetune} {tiny} hydra.run.dir={shlex.quote(str(tmp_path / 'tune'))}", report):
        pasted = subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=tmp_path, env=env)
        assert pasted.returncode == 0, line + "\n" + pasted.stderr[-3000:]


def test_lightnings_start_up_notes_go_to_the_log_file_not_the_terminal(tmp_path):
    proc = sslrun("pretrain", *TINY, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for note in ("GPU available", "TPU available", "Trainable params"):
        assert note not in proc.stdout + proc.stderr, note
    assert "GPU available" in (tmp_path / "run" / "pretrain.log").read_text()


def test_help_list_and_preflight_errors_answer_without_importing_torch(tmp_path):
    """Every command once took 5-6 s to start, --help and a typo too: torch and Lightning were imported first."""
    argvs = [
        ["--help"],
        ["pretrain", "--help"],
        ["finetune", "--help"],
        ["pretrain", "data.batch_size=0"],
        ["pretrain", "trainer.max_epoch=3"],
        ["pretrain", "method=nope"],
        ["finetune", "mode=half"],
        ["list"],
    ]
    probe = (
        "import sys\n"
        "from sslrun.cli import main\n"
        f"for argv in {argvs!r}:\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as stop:\n"
        "        print('exit', stop.code)\n"
        "print('imported:', sorted(m for m in ('torch', 'pytorch_lightning') if m in sys.modules))\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    # fills the cache from the registries (imports torch)
    first = subprocess.run([SSLRUN, "list"], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert first.returncode == 0 and "contrastive" in first.stdout
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and "imported: []" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count("exit 2") == 4 and "Configuration groups" in proc.stdout
    assert "data.batch_size=0 must be an integer > 0" in proc.stderr and "unknown method 'nope'" in proc.stderr
    assert "data.views.crop_min_scale" in proc.stdout and "eval.layer" in proc.stdout  # --help lists every key
    assert first.stdout in proc.stdout  # the cached listing is the registries' listing
