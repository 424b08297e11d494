"""timm and torchvision models through the CLI: pretrain, resume, fine-tune at a stage, export in the library's own
format (the load snippet the export prints, run in a fresh interpreter, gives sslrun's features), and start a run
from that file."""

import json
import subprocess
import sys

import pytest
import torch

from helpers.cli import TINY, assert_user_error, sslrun
from sslrun.backbones import BACKBONES
from sslrun.backbones.library import load_snippet
from sslrun.checkpoint import load_pretrained
from sslrun.config import backbone_config

CASES = {"timm": ("regnetx_002", "enc.pth", "timm"), "torchvision": ("mobilenet_v3_small", "enc.safetensors", "auto")}
STEM = {"timm": [], "torchvision": ["backbone.stem=cifar"]}  # the small-image stem once: the export says it differs


def library_args(library: str) -> list[str]:
    model = CASES[library][0]
    return [*TINY[:3], f"backbone={library}", f"backbone.model={model}", *STEM[library], "trainer=debug"]


@pytest.mark.parametrize("library", sorted(CASES))
def test_a_library_model_pretrains_resumes_finetunes_exports_and_loads_into_the_library(library, tmp_path):
    model, filename, file_format = CASES[library]
    run = tmp_path / "run"
    args = [*library_args(library), f"hydra.run.dir={run}"]
    first = sslrun("pretrain", *args, "trainer.max_epochs=1", "trainer.max_steps=-1", cwd=tmp_path, threads=1)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    if library == "timm":  # resume and a start from the export once (the suite's time): nothing library-specific
        again = sslrun("pretrain", *args, "trainer.max_epochs=2", "trainer.max_steps=-1", cwd=tmp_path, threads=1)
        assert again.returncode == 0 and "resuming from" in again.stdout + again.stderr, again.stdout[-3000:]
        assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    tune = sslrun(
        "finetune", f"pretrained={run}", *TINY[:3], "eval.layer=layer2", f"hydra.run.dir={tmp_path / 'ft'}",
        "trainer=debug", cwd=tmp_path, threads=1,
    )  # fmt: skip
    assert tune.returncode == 0, tune.stdout[-3000:] + tune.stderr[-3000:]
    tuned = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert tuned["precise_bn_images"] > 0  # eval.precise_bn=auto: on for a library model
    assert "top1" in tuned and tuned["backbone"] == f"{library} {model}" + (" stem=cifar" if STEM[library] else "")

    out = tmp_path / filename
    export = sslrun("export", f"pretrained={run}", f"out={out}", f"format={file_format}", cwd=tmp_path)
    assert export.returncode == 0, export.stderr[-3000:]
    assert ("differs" in export.stdout) == bool(STEM[library])  # the summary's row: not the library's own model
    ckpt = load_pretrained(str(run))
    ours = BACKBONES.build(library, backbone_config(ckpt.config["backbone"]), ckpt.in_channels, ckpt.image_size)
    ours.load_state_dict(ckpt.backbone_state)
    snippet = load_snippet(ours, str(out), out.suffix == ".safetensors")
    assert snippet.split("; ")[-1][:20] in " ".join(export.stdout.split())  # the snippet is what the export prints
    x = torch.rand(2, ckpt.in_channels, ckpt.image_size, ckpt.image_size)
    torch.save(x, tmp_path / "x.pt")
    x_file, y_file = str(tmp_path / "x.pt"), str(tmp_path / "y.pt")
    probe = f"{snippet}\nimport torch; m.eval(); torch.save(m(torch.load({x_file!r})), {y_file!r})"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "y.pt"), ours.eval()(x))

    if library != "timm":
        return
    # the export starts a new run: backbone.weights takes the library's own keys
    start = sslrun("pretrain", *library_args(library), f"backbone.weights={out}", "trainer.max_steps=1",
                   f"hydra.run.dir={tmp_path / 'again'}", cwd=tmp_path, threads=1)  # fmt: skip
    assert start.returncode == 0, start.stderr[-3000:]
    assert "backbone.weights: loaded all" in (tmp_path / "again" / "pretrain.log").read_text()


@pytest.mark.parametrize(
    "args,fragments",
    [
        (
            ["backbone=timm", "backbone.model=regnetx_02"],
            ["unknown timm model 'regnetx_02' (did you mean", "regnetx_002"],
        ),
        (["backbone=torchvision", "backbone.model=mobilenet_v3_smal"], ["did you mean mobilenet_v3_small"]),
        (
            ["backbone=timm", "+backbone.kwargs.pretrained=true"],
            ["backbone.kwargs.pretrained: sslrun downloads nothing"],
        ),
        (["backbone=timm", "backbone.width=0.5"], ["unknown key 'backbone.width'", "kwargs, model, name"]),
        (
            ["backbone=resnet18", "backbone.weights=/nonexistent.pt"],
            ["backbone.weights='/nonexistent.pt': no such file"],
        ),
    ],
)
def test_library_backbone_mistakes_are_one_line(args, fragments, tmp_path):
    proc = sslrun("pretrain", *TINY[:3], *args, "trainer=debug", "trainer.max_steps=1", cwd=tmp_path, threads=1)
    assert_user_error(proc, *fragments)


def test_library_keys_on_an_own_backbone_are_refused_before_torch(tmp_path):
    assert_user_error(sslrun("pretrain", "+backbone.model=resnet18", cwd=tmp_path),
                      "backbone.model and backbone.kwargs are for backbone=timm or backbone=torchvision")  # fmt: skip
