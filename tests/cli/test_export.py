"""``sslrun export`` without the console script: every ResNet state_dict loads into torchvision with strict=True after
the changes ``load_recipe`` names, and the file format follows ``format`` or the suffix of ``out``. The export
through the console script (both formats, metadata) runs in tests/test_cli.py on its pretraining run."""

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from sslrun.backbones import BACKBONES
from sslrun.config import backbone_config
from sslrun.export import load_recipe, resolve_format

INPUT_SIZE = {"cifar": 8, "imagenet": 32}  # 8x8 maps into layer1 with either stem: keeps resnet50 cheap


@pytest.fixture(autouse=True)
def one_thread():
    """These forward passes are tiny: on a busy CPU, intra-op threads cost far more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(name: str, channels: int, **values) -> nn.Module:
    return BACKBONES.build(name, backbone_config({"name": name, **values}), channels, 32)


def torchvision_twin(name: str, stem: str, channels: int) -> nn.Module:
    """torchvision's model, changed as the recipe says."""
    model = getattr(torchvision.models, name)()
    model.fc = nn.Identity()
    if stem == "cifar":
        model.conv1 = nn.Conv2d(channels, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    elif channels != 3:
        model.conv1 = nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
    return model


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
@pytest.mark.parametrize("channels", [1, 3])
def test_resnet_state_dict_loads_into_torchvision_strictly(name, stem, channels):
    torch.manual_seed(0)
    ours = build(name, channels, stem=stem)
    with torch.no_grad():  # no BatchNorm left at its default, so a key loaded into the wrong place would show
        for bn in (m for m in ours.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.weight.uniform_(0.5, 1.5), bn.bias.normal_(0, 0.1)
            bn.running_mean.normal_(0, 0.1), bn.running_var.uniform_(0.5, 1.5)
    twin = torchvision_twin(name, stem, channels)
    twin.load_state_dict(ours.state_dict(), strict=True)  # raises on any missing or extra key (buffers included)
    x = torch.randn(2, channels, INPUT_SIZE[stem], INPUT_SIZE[stem])
    ours.eval(), twin.eval()
    with torch.no_grad():
        torch.testing.assert_close(twin(x), ours(x), atol=1e-5, rtol=1e-5)
    stem_change = {
        "cifar": f"; conv1=Conv2d({channels},64,3,1,1,bias=False); maxpool=Identity",
        "imagenet": "" if channels == 3 else f"; conv1=Conv2d({channels},64,7,2,3,bias=False)",
    }[stem]
    assert load_recipe(name, ours, 1.0) == f"torchvision.models.{name}(); fc=Identity{stem_change}; strict=True"


def test_other_widths_and_backbones_say_torchvision_has_no_equivalent():
    narrow = build("resnet18", 3, width=0.5, stem="imagenet")
    with pytest.raises(RuntimeError, match="size mismatch"):
        torchvision_twin("resnet18", "imagenet", 3).load_state_dict(narrow.state_dict(), strict=True)
    assert load_recipe("resnet18", narrow, 0.5).startswith("not into torchvision: width=0.5")
    assert "torchvision has no equivalent" in load_recipe("convnet", build("convnet", 3), 1.0)


@pytest.mark.parametrize(
    "requested,out,written",
    [
        ("auto", "encoder.safetensors", "safetensors"),
        ("auto", "ENCODER.SAFETENSORS", "safetensors"),
        ("auto", "encoder.pt", "torch"),
        ("auto", "encoder", "torch"),
        ("torch", "encoder.safetensors", "torch"),
        ("safetensors", "encoder.pt", "safetensors"),
    ],
)
def test_format_auto_follows_the_suffix_of_out(requested, out, written):
    assert resolve_format(requested, Path(out)) == written
