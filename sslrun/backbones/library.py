"""Any timm or torchvision classification model as a backbone, by name: ``backbone=timm backbone.model=convnext_atto``
or ``backbone=torchvision backbone.model=mobilenet_v3_small``.

The library's model is built unchanged apart from what the data forces (timm: ``in_chans`` and, for models that take
one, ``img_size`` and a ``patch_size`` that divides it; torchvision: a first convolution for C != 3 channels) and with
its classifier removed (timm ``num_classes=0``; torchvision: the last ``nn.Linear`` replaced by ``nn.Identity``), so
``sslrun export`` writes a state_dict that loads strict into the library's own model. Nothing is downloaded: start
from a file with ``backbone.weights=PATH``.

``forward_layer`` cuts the model after one of four stages: timm's ``feature_info`` (the last four entries of a CNN;
four evenly spaced blocks of a ViT), torchvision's modules that end each of the last four feature-map strides.
"""

from __future__ import annotations

import difflib
import logging
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sslrun.backbones import BACKBONES
from sslrun.backbones.vit import resolve_patch_size
from sslrun.config import LIBRARY_BACKBONES, BackboneConfig

log = logging.getLogger(__name__)

# constructor arguments that would fetch weights: this machine, like many clusters, is offline
DOWNLOADING = ("pretrained", "weights", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path")


class _Stop(Exception):
    """Raised by a stage's forward hook to end the forward pass there, carrying the stage's output."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = output


class LibraryBackbone(nn.Module):
    """A library's headless model (``self.model``): (B, C, H, W) -> (B, feature_dim), its own pooling."""

    def __init__(
        self,
        model: nn.Module,
        library: str,
        name: str,
        stages: list[str],
        stage_dims: list[int],
        feature_dim: int,
        prefix_tokens: int = 0,
        build_kwargs: dict | None = None,
        changes: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.library, self.model_name = library, name
        self.stages = stages  # module names ending layer1 .. layer3 ([] when the model has no four stages)
        self.layer_dims = [*stage_dims[:3], feature_dim] if stages else [feature_dim] * 4
        self.feature_dim = feature_dim
        self.prefix_tokens = prefix_tokens
        self.build_kwargs = build_kwargs or {}  # what the library's constructor was given besides the defaults
        self.changes = changes or []  # (torchvision) modules replaced: (path, constructor expression)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def forward_layer(self, x: torch.Tensor, depth: int) -> torch.Tensor:
        """Pooled (B, layer_dims[depth - 1]) features after stage ``depth`` (1-4; 4 is ``forward``)."""
        if depth == 4:
            return self(x)
        if not self.stages:
            raise ValueError(
                f"{self.library} model {self.model_name} has no four stages sslrun can name; use eval.layer=last"
            )
        return self.pool(self._stage_output(x, self.stages[depth - 1]), self.layer_dims[depth - 1])

    def _stage_output(self, x: torch.Tensor, stage: str) -> torch.Tensor:
        def stop(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            raise _Stop(output)

        handle = self.model.get_submodule(stage).register_forward_hook(stop)
        try:
            self.model(x)
        except _Stop as done:
            return done.output
        finally:
            handle.remove()
        raise RuntimeError(f"stage {stage} of {self.model_name} did not run")

    def pool(self, features: torch.Tensor, channels: int) -> torch.Tensor:
        """(B, C, H, W), (B, H, W, C) or tokens (B, N, C) -> (B, C): the mean over positions (not prefix tokens)."""
        if features.ndim == 3:
            return features[:, self.prefix_tokens :].mean(dim=1)
        if features.shape[1] == channels:
            return features.mean(dim=(2, 3))
        return features.mean(dim=(1, 2))


def describe(cfg: BackboneConfig, stem: str | None = None) -> str:
    """The backbone in a few words: ``timm convnext_atto`` or ``resnet18 width=0.5 stem=cifar``."""
    if cfg.name in LIBRARY_BACKBONES:
        return f"{cfg.name} {cfg.model}"
    return f"{cfg.name} width={cfg.width} stem={stem or cfg.stem}"


def _unknown_model(library: str, name: str, choices: list[str], listing: str) -> ValueError:
    close = difflib.get_close_matches(name, choices, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return ValueError(f"unknown {library} model {name!r}{hint}; the names are {listing}")


def _kwargs(cfg: BackboneConfig, library: str) -> dict[str, Any]:
    """The extra constructor arguments, refusing those that would download weights and sslrun's own size keys."""
    if cfg.width != 1.0:
        raise ValueError(
            f"backbone.width is for sslrun's own backbones; a {library} model's size is its name "
            f"(backbone.model) or its constructor arguments (backbone.kwargs)"
        )
    kwargs = OmegaConf.to_container(cfg.kwargs) if isinstance(cfg.kwargs, DictConfig) else dict(cfg.kwargs or {})
    for key in DOWNLOADING:
        if key in kwargs:
            raise ValueError(
                f"backbone.kwargs.{key}: sslrun downloads nothing (the machine may be offline); to start from weights "
                f"pass a local file as backbone.weights=PATH (a {library} state_dict, .safetensors, or an sslrun run)"
            )
    return kwargs


def _dry_run(model: nn.Module, in_channels: int, image_size: int, what: str, hooks: dict[str, nn.Module]):
    """One forward pass of two blank images in eval mode: the output and each hooked module's output."""
    outputs: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda _m, _i, o, n=n: outputs.setdefault(n, o)) for n, m in hooks.items()]
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            features = model(torch.zeros(2, in_channels, image_size, image_size))
    except (RuntimeError, ValueError, TypeError, AssertionError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise ValueError(
            f"{what} cannot take {in_channels}x{image_size}x{image_size} images ({first}); choose another model, "
            "or data.image_size (or backbone.kwargs) it accepts"
        ) from None
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return features, outputs


def _feature_dim(features: torch.Tensor, what: str) -> int:
    if features.ndim != 2:
        raise ValueError(f"{what} gives {tuple(features.shape)} features, not (batch, dim); choose another model")
    return features.shape[1]


def _describe_map(what: str, image_size: int, output: torch.Tensor | None, channels: int) -> None:
    if output is not None and output.ndim == 4:
        h, w = output.shape[2:] if output.shape[1] == channels else output.shape[1:3]
        log.info("%s: %d px images reach a %dx%d feature map before pooling", what, image_size, h, w)


@BACKBONES.register("timm")
def build_timm(cfg: BackboneConfig, in_channels: int, image_size: int) -> LibraryBackbone:
    """Any timm model by name (backbone.model=<timm.list_models() name>), headless"""
    try:
        import timm
    except ImportError:
        raise ValueError("backbone=timm needs timm: pip install timm") from None
    name = cfg.model
    if not name:
        raise ValueError("backbone=timm needs backbone.model=<name>, e.g. resnet18, convnext_atto, regnetx_002")
    if not timm.is_model(name):
        raise _unknown_model("timm", name, timm.list_models(), "timm.list_models()")
    kwargs = _kwargs(cfg, "timm")
    fixed = {"num_classes": 0, "in_chans": in_channels}
    what = f"timm {name}"
    try:  # models with a fixed input size (ViTs) take img_size; CNNs refuse it
        model = timm.create_model(name, pretrained=False, **fixed, **{"img_size": image_size, **kwargs})
        kwargs.setdefault("img_size", image_size)
    except TypeError:
        model = timm.create_model(name, pretrained=False, **fixed, **kwargs)
    embed = getattr(model, "patch_embed", None)
    if embed is not None and "patch_size" not in kwargs and hasattr(embed, "patch_size"):
        own = int(embed.patch_size[0])
        patch = own if cfg.patch_size == "auto" and image_size >= 96 else resolve_patch_size(cfg.patch_size, image_size)
        if image_size % patch:
            raise ValueError(f"backbone.patch_size={patch} does not divide data.image_size={image_size}")
        if patch != own:
            kwargs["patch_size"] = patch
            model = timm.create_model(name, pretrained=False, **fixed, **kwargs)
        log.info("%s: img_size=%d, patch_size=%d (%dx%d tokens)", what, image_size, patch, *(2 * [image_size // patch]))
    info = list(getattr(model, "feature_info", []) or [])
    if len(info) >= 4:
        reductions = {entry["reduction"] for entry in info}
        picked = [info[len(info) * k // 4 - 1] for k in (1, 2, 3, 4)] if len(reductions) == 1 else info[-4:]
    else:
        picked = []
    stages = [entry["module"] for entry in picked]
    hooks = {s: model.get_submodule(s) for s in stages}
    features, outputs = _dry_run(model, in_channels, image_size, what, hooks)
    feature_dim = _feature_dim(features, what)
    if picked:
        _describe_map(what, image_size, outputs.get(stages[-1]), picked[-1]["num_chs"])
    return LibraryBackbone(
        model,
        "timm",
        name,
        stages[:3],
        [entry["num_chs"] for entry in picked],
        feature_dim,
        prefix_tokens=int(getattr(model, "num_prefix_tokens", 0) or 0),
        build_kwargs=kwargs,
    )


def _last(model: nn.Module, kind: type[nn.Module]) -> str | None:
    found = [name for name, m in model.named_modules() if isinstance(m, kind)]
    return found[-1] if found else None


def _first(model: nn.Module, kind: type[nn.Module]) -> str | None:
    return next((name for name, m in model.named_modules() if isinstance(m, kind)), None)


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def conv_expression(conv: nn.Conv2d) -> str:
    """The ``nn.Conv2d(...)`` call that makes a layer shaped like ``conv``."""
    args = [conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding]
    text = ", ".join(str(tuple(a) if isinstance(a, tuple) else a) for a in args)
    extra = "" if conv.bias is not None else ", bias=False"
    extra += f", groups={conv.groups}" if conv.groups != 1 else ""
    extra += f", dilation={conv.dilation}" if conv.dilation != (1, 1) else ""
    return f"torch.nn.Conv2d({text}{extra})"


@BACKBONES.register("torchvision")
def build_torchvision(cfg: BackboneConfig, in_channels: int, image_size: int) -> LibraryBackbone:
    """Any torchvision classification model by name (backbone.model=<list_models() name>), headless"""
    import torchvision

    name = cfg.model
    if not name:
        raise ValueError("backbone=torchvision needs backbone.model=<name>, e.g. resnet18, mobilenet_v3_small")
    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise _unknown_model("torchvision", name, names, "torchvision.models.list_models(module=torchvision.models)")
    kwargs = _kwargs(cfg, "torchvision")
    what = f"torchvision {name}"
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    changes = []
    head = _last(model, nn.Linear)
    if head is None:
        raise ValueError(f"{what} has no nn.Linear classifier to remove; choose another model")
    _replace(model, head, nn.Identity())
    changes.append((head, "torch.nn.Identity()"))
    first = _first(model, nn.Conv2d)
    conv = model.get_submodule(first) if first else None
    if conv is not None and conv.in_channels != in_channels:
        new = nn.Conv2d(
            in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
        )
        _replace(model, first, new)
        changes.append((first, conv_expression(new)))
        log.info(
            "%s: first convolution %s made for %d-channel images: %s", what, first, in_channels, conv_expression(new)
        )
    # stages: the last module (in execution order) at each feature-map stride; the last four strides
    candidates = {n: m for n, m in model.named_modules() if n and n.count(".") <= 1}
    features, outputs = _dry_run(model, in_channels, image_size, what, candidates)
    feature_dim = _feature_dim(features, what)
    by_stride: dict[int, tuple[str, int]] = {}
    for n, out in outputs.items():  # dict order = first-output order; a container ends after its children
        if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[-1] > 0:
            by_stride.pop(image_size // out.shape[-1], None)
            by_stride[image_size // out.shape[-1]] = (n, out.shape[1])
    ends = sorted(by_stride.items())[-4:] if len(by_stride) >= 4 else []
    if ends:
        _describe_map(what, image_size, outputs[ends[-1][1][0]], ends[-1][1][1])
    return LibraryBackbone(
        model,
        "torchvision",
        name,
        [n for _, (n, _) in ends[:3]],
        [c for _, (_, c) in ends],
        feature_dim,
        build_kwargs=kwargs,
        changes=changes,
    )


def _attribute(path: str) -> str:
    """``features.0.0`` -> ``.features[0][0]``: a module path as the Python that reaches it."""
    return "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in path.split("."))


def load_snippet(backbone: LibraryBackbone, out: str, safetensors: bool) -> str:
    """The Python that builds the library's own model as ``m`` and loads the exported file into it, strict."""
    read = f"safetensors.torch.load_file({out!r})" if safetensors else f"torch.load({out!r})"
    if backbone.library == "module":
        return f"m = {backbone.model_name}(...)  # your module, built as for sslrun; m.load_state_dict({read})"
    if backbone.library == "timm":
        args = [repr(backbone.model_name), "num_classes=0", f"in_chans={_in_channels(backbone)}"]
        args += [f"{k}={v!r}" for k, v in backbone.build_kwargs.items()]
        return f"import timm; m = timm.create_model({', '.join(args)}, checkpoint_path={out!r})"
    kwargs = "".join(f", {k}={v!r}" for k, v in backbone.build_kwargs.items())
    imports = "import torch, torchvision" + (", safetensors.torch" if safetensors else "")
    steps = [imports, f"m = torchvision.models.get_model({backbone.model_name!r}, weights=None{kwargs})"]
    steps += [f"m{_attribute(path)} = {expression}" for path, expression in backbone.changes]
    return "; ".join([*steps, f"m.load_state_dict({read})"])


def _in_channels(backbone: LibraryBackbone) -> int:
    first = _first(backbone.model, nn.Conv2d)
    return backbone.model.get_submodule(first).in_channels if first else 3


# The user's own module, while ``sslrun.api`` runs a command with it (``backbone=module``)
_GIVEN: list[nn.Module] = []


class given_module:  # noqa: N801  (a context manager used like a function)
    """``with given_module(net):`` makes ``backbone=module`` build copies of ``net`` while the block runs."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __enter__(self) -> nn.Module:
        _GIVEN.append(self.module)
        return self.module

    def __exit__(self, *exc: object) -> None:
        _GIVEN.remove(self.module)


def qualified_name(module: nn.Module) -> str:
    kind = type(module)
    return f"{kind.__module__}.{kind.__qualname__}"


class ModuleBackbone(LibraryBackbone):
    """A user's module: its (B, D) output as it is, a (B, C, H, W) map or (B, N, D) tokens mean-pooled."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out if out.ndim == 2 else self.pool(out, self.feature_dim)


@BACKBONES.register("module")
def build_module(cfg: BackboneConfig, in_channels: int, image_size: int) -> ModuleBackbone:
    """Your own nn.Module, given to sslrun.api.pretrain/finetune/export (backbone=...)"""
    import copy

    if not _GIVEN:
        raise ValueError(
            f"backbone=module is a Python module ({cfg.model or 'unknown'}) given to sslrun.api.pretrain(..., "
            "backbone=...); the CLI cannot build it: use sslrun.api.finetune / sslrun.api.export with the same module"
        )
    model = copy.deepcopy(_GIVEN[-1])
    what = f"backbone module {qualified_name(model)}"
    out, _ = _dry_run(model, in_channels, image_size, what, {})
    if not isinstance(out, torch.Tensor) or out.ndim not in (2, 3, 4) or out.shape[0] != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"{what} returns {shape} for a batch of 2 images; it must return (B, D) features, a (B, C, H, W) feature "
            "map or (B, N, D) tokens (one tensor)"
        )
    dim = int(out.shape[1] if out.ndim in (2, 4) else out.shape[2])
    return ModuleBackbone(model, "module", qualified_name(model), [], [], dim)
