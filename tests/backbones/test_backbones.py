import pytest
import torch
from omegaconf import OmegaConf

from sslrun.backbones import BACKBONES
from sslrun.config import LIBRARY_BACKBONES, BackboneConfig

# a small model of each library, for the registry-wide tests (a ViT too: tokens, not feature maps)
LIBRARY_MODELS = {"timm": ["regnetx_002", "deit_tiny_patch16_224"], "torchvision": ["mobilenet_v3_small"]}
OWN = [name for name in BACKBONES.names() if name not in LIBRARY_BACKBONES]
CASES = [(name, None) for name in OWN] + [(lib, m) for lib, models in LIBRARY_MODELS.items() for m in models]
assert {*LIBRARY_MODELS, "module"} == set(LIBRARY_BACKBONES) <= set(BACKBONES.names())  # module: tests/cli/test_api.py


def cfg(name: str, **kw) -> BackboneConfig:
    return OmegaConf.merge(OmegaConf.structured(BackboneConfig), {"name": name, **kw})


def small(name: str, model: str | None) -> BackboneConfig:
    """A small config of the backbone: width 0.25 for sslrun's own, the library's model as it is."""
    return cfg(name, model=model) if model else cfg(name, width=0.25)


@pytest.mark.parametrize("name,model", CASES)
@pytest.mark.parametrize("in_channels,size", [(1, 16), (3, 32), (3, 72)])
def test_every_backbone_maps_images_to_feature_dim(name, model, in_channels, size):
    model = BACKBONES.build(name, small(name, model), in_channels, size)
    out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, model.feature_dim)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name,model", CASES)
def test_every_backbone_runs_channels_last_under_bf16_autocast(name, model):
    """What trainer.channels_last=true and precision=bf16-mixed do to it: the same features, to bf16's precision."""
    net = BACKBONES.build(name, small(name, model), 3, 32)  # training mode: batch statistics, as in pretraining
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = net(x)
        net = net.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == ref.shape  # (a final LayerNorm runs in fp32 under autocast)
    assert torch.nn.functional.cosine_similarity(out.float(), ref).min() > 0.95  # bf16 through ~50 layers


@pytest.mark.parametrize("name", OWN)
def test_width_multiplier_scales_parameters(name):
    narrow = BACKBONES.build(name, cfg(name, width=0.25), 3, 32)
    wide = BACKBONES.build(name, cfg(name, width=0.5), 3, 32)
    assert sum(p.numel() for p in wide.parameters()) > 3 * sum(p.numel() for p in narrow.parameters())


def test_cifar_stem_keeps_resolution_and_auto_picks_it_for_small_images():
    model = BACKBONES.build("resnet18", cfg("resnet18", stem="auto"), 3, 32)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    big = BACKBONES.build("resnet18", cfg("resnet18", stem="auto"), 3, 224)
    assert big.conv1.kernel_size == (7, 7)


@pytest.mark.parametrize("name,model", CASES)
def test_every_backbone_has_four_named_stages_and_the_last_is_its_output(name, model):
    from sslrun.backbones.layers import LAYERS, at_layer

    model = BACKBONES.build(name, small(name, model), 3, 32).eval()
    x = torch.randn(2, 3, 32, 32)
    assert at_layer(model, "last") is model and at_layer(model, "layer4") is model
    torch.testing.assert_close(model.forward_layer(x, 4), model(x))
    for depth, layer in enumerate(LAYERS[:-1], start=1):
        cut = at_layer(model, layer)
        assert cut(x).shape == (2, model.layer_dims[depth - 1]) == (2, cut.feature_dim)
    if "vit" not in name and "deit" not in str(getattr(model, "model_name", "")):
        assert model.forward_layer(x, 1).shape != model(x).shape  # the stages widen
    with pytest.raises(ValueError, match="eval.layer='layer9' is not"):
        at_layer(model, "layer9")
    if name in LIBRARY_MODELS:  # the library's own module names too
        own = at_layer(model, model.stages[1])
        torch.testing.assert_close(own(x), model.forward_layer(x, 2))
        assert own.feature_dim == model.layer_dims[1]
        with pytest.raises(ValueError, match=f"did you mean {model.stages[1]}"):
            at_layer(model, model.stages[1] + "x")


@pytest.mark.parametrize("library,model", [("timm", "resnet10t"), ("torchvision", "resnet18")])
def test_small_image_stem_for_library_models_keeps_positions_and_loads_into_the_library(library, model, tmp_path):
    from sslrun.backbones.library import load_snippet

    own = BACKBONES.build(library, cfg(library, model=model), 1, 28)
    small = BACKBONES.build(library, cfg(library, model=model, stem="cifar"), 1, 28).eval()
    assert len(small.changes) - len(own.changes) == 2  # the first conv's stride, the stem max-pool
    x = torch.randn(2, 1, 28, 28)
    maps = [b._stage_output(x, b.stages[0]).shape[-1] for b in (own, small)]
    assert maps[1] == 4 * maps[0]  # 4x the positions per side after the first stage
    torch.save(small.model.state_dict(), tmp_path / "enc.pth")
    scope = {}
    exec(load_snippet(small, str(tmp_path / "enc.pth"), False), scope)  # the library's model, changed as exported
    with torch.no_grad():
        torch.testing.assert_close(scope["m"].eval()(x), small(x))
    with pytest.raises(ValueError, match="stem=cifar is for CNNs"):
        BACKBONES.build("timm", cfg("timm", model="deit_tiny_patch16_224", stem="cifar"), 1, 28)


def test_vit_patches_positions_and_errors():
    from sslrun.backbones.vit import sincos_2d

    vit = BACKBONES.build("vit_tiny", cfg("vit_tiny", width=0.25), 1, 28)
    assert vit.patch_size == 4 and vit.grid == 7
    assert BACKBONES.build("vit_tiny", cfg("vit_tiny", width=0.25), 3, 224).patch_size == 16
    assert vit.embed(torch.randn(2, 1, 12, 12)).shape == (2, 9, vit.feature_dim)  # a smaller crop: positions resized
    pos = sincos_2d(8, 3)
    assert pos.shape == (9, 8) and torch.equal(pos[0, :2], torch.tensor([0.0, 0.0]))  # sin(0) for the column
    assert not any(k.startswith("pos_embed") for k in vit.state_dict())  # fixed, rebuilt from the config
    with pytest.raises(ValueError, match="patch_size=5 does not divide data.image_size=28; use one of: 2, 4, 7"):
        BACKBONES.build("vit_tiny", cfg("vit_tiny", patch_size=5), 1, 28)
