"""``backbone.weights``: a library's own state_dict, an sslrun export, strict and non-strict loading."""

import pytest
import torch
from omegaconf import OmegaConf

from sslrun.backbones import BACKBONES
from sslrun.backbones.weights import load_weights
from sslrun.config import BackboneConfig


def build(name: str, channels: int = 1, **values):
    cfg = OmegaConf.merge(OmegaConf.structured(BackboneConfig), {"name": name, **values})
    return BACKBONES.build(name, cfg, channels, 32).eval()


def test_a_timm_state_dict_loads_and_gives_the_same_features(tmp_path):
    import timm

    source = timm.create_model("regnetx_002", num_classes=0, in_chans=1).eval()
    torch.save(source.state_dict(), tmp_path / "w.pth")
    ours = build("timm", model="regnetx_002")
    load_weights(ours, str(tmp_path / "w.pth"))
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), source(x))


def test_a_file_that_does_not_fit_is_refused_strict_and_partly_loaded_otherwise(tmp_path, caplog):
    import timm

    other = timm.create_model("regnetx_002", num_classes=10, in_chans=3)  # a head, and a 3-channel stem
    torch.save({"state_dict": other.state_dict()}, tmp_path / "w.pt")
    ours = build("timm", model="regnetx_002")
    with pytest.raises(
        ValueError,
        match=r"unexpected: model.head.fc.weight, model.head.fc.bias \(2\); other shape: "
        r"model.stem.conv.weight \(1\); backbone.weights_strict=false",
    ):
        load_weights(ours, str(tmp_path / "w.pt"))
    load_weights(ours, str(tmp_path / "w.pt"), strict=False)
    torch.testing.assert_close(ours.model.s4.b1.conv1.conv.weight, other.s4.b1.conv1.conv.weight)
    assert "skipped unexpected: model.head.fc.weight" in caplog.text


def test_safetensors_and_own_backbones_load_and_nothing_fitting_is_an_error(tmp_path):
    from safetensors.torch import save_file

    source = build("convnet", width=0.25)
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    ours = build("convnet", width=0.25)
    load_weights(ours, str(tmp_path / "w.safetensors"))
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(ours(x), source(x))
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="does not fit the backbone: missing"):
        load_weights(ours, str(tmp_path / "other.pt"), strict=False)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_weights(ours, str(tmp_path / "junk.pt"))
