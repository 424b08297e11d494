"""Any timm or torchvision classification model as a backbone, by name: ``backbone=timm backbone.model=convnext_atto``
or ``backbone=torchvision backbone.model=mobilenet_v3_small``.

The library's model is built unchanged apart from what the data forces (timm: ``in_chans`` and, for models that take
one, ``img_size`` and a ``patch_size`` that divides it; torchvision: a first convolution for C != 3 channels) and with
its classifier removed (timm ``num_classes=0``; torchvision: the last ``nn.Linear``, and a dropout right before it,
replaced by ``nn.Identity``), so
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
        changes: list[tuple[str, str]] | None = None,
        input_shape: tuple[int, int] = (3, 32),
    ) -> None:
        super().__init__()
        self.model = model
        self.library, self.model_name = library, name
        self.stages = stages  # module names ending layer1 .. layer3 ([] when the model has no four stages)
        self.layer_dims = [*stage_dims[:3], feature_dim] if stages else [feature_dim] * 4
        self.feature_dim = feature_dim
        self.prefix_tokens = prefix_tokens
        self.build_kwargs = build_kwargs or {}  # what the library's constructor was given besides the defaults
        # (path, expression): what sslrun changed in the library's model (a module replaced, a stride set), in order
        self.changes = changes or []
        self.input_shape = input_shape  # (channels, image size) it was built for: a named stage's dry run

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

    # a timm VisionTransformer's tokens, for method=mae (the interface of sslrun's own ViT: embed, encode, grid)
    def vit(self) -> nn.Module:
        m = self.model
        if type(m).__name__ != "VisionTransformer" or getattr(m, "cls_token", None) is None:
            raise ValueError(
                f"method=mae needs a ViT with a class token (timm vit_*, deit_* without distillation); "
                f"{self.library} {self.model_name} is not one"
            )
        return m

    @property
    def patch_size(self) -> int:
        return int(self.vit().patch_embed.patch_size[0])

    @property
    def grid(self) -> int:
        return self.input_shape[1] // self.patch_size

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D) patch tokens plus their position embeddings (timm's ``_pos_embed`` split)."""
        m = self.vit()
        tokens = m.patch_embed(x)
        tokens = tokens.flatten(1, 2) if tokens.ndim == 4 else tokens
        if m.pos_embed is not None:
            tokens = tokens + (m.pos_embed if m.no_embed_class else m.pos_embed[:, m.num_prefix_tokens :])
        return tokens

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, n, D) patch tokens (all, or MAE's visible subset) -> (B, 1 + n, D): the class token and the patches
        after every block and the final norm (register tokens run with them and are dropped)."""
        m = self.vit()
        pos = None if m.pos_embed is None or m.no_embed_class else m.pos_embed[:, : m.num_prefix_tokens]
        prefix = m.cls_token
        if getattr(m, "reg_token", None) is not None:
            prefix = torch.cat([prefix, m.reg_token], dim=1)
        prefix = (prefix if pos is None else prefix + pos).expand(len(tokens), -1, -1)
        h = m.norm_pre(m.pos_drop(torch.cat([prefix.to(tokens.dtype), tokens], dim=1)))
        h = m.norm(m.blocks(h))
        return torch.cat([h[:, :1], h[:, m.num_prefix_tokens :]], dim=1)

    def named_stage(self, name: str) -> nn.Module:
        """``eval.layer=<a module of the library's model>`` (e.g. ``stages.2``, ``features.8``): its pooled output."""
        modules = [n for n, _ in self.model.named_modules() if n]
        if name not in modules:
            close = difflib.get_close_matches(name, modules, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(
                f"eval.layer={name!r} is not last, layer1 .. layer4 or a module of {self.library} {self.model_name}"
                f"{hint}; its stages are {', '.join(self.stages) or 'not named'}"
            )
        channels, size = self.input_shape
        with torch.no_grad():
            out = self._stage_output(torch.zeros(2, channels, size, size, device=_device(self)), name)
        if not isinstance(out, torch.Tensor) or out.ndim not in (2, 3, 4):
            raise ValueError(f"eval.layer={name!r}: that module gives no (B, C), (B, N, C) or (B, C, H, W) tensor")
        return NamedStage(self, name, _channels(out))

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


def _device(module: nn.Module) -> torch.device:
    return next((p.device for p in module.parameters()), torch.device("cpu"))


def _channels(out: torch.Tensor) -> int:
    """The channel count of a (B, C), (B, N, C) or (B, C, H, W) output; timm's NHWC maps are (B, H, W, C)."""
    if out.ndim == 4 and out.shape[1] != out.shape[2] and out.shape[2] == out.shape[3]:
        return int(out.shape[1])
    return int(out.shape[-1]) if out.ndim == 4 else int(out.shape[1] if out.ndim == 2 else out.shape[2])


class NamedStage(nn.Module):
    """A library model cut after one of its own modules: the pooled output of that module."""

    def __init__(self, backbone: LibraryBackbone, name: str, feature_dim: int) -> None:
        super().__init__()
        self.backbone, self.name, self.feature_dim = backbone, name, feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.backbone._stage_output(x, self.name)
        return out if out.ndim == 2 else self.backbone.pool(out, self.feature_dim)


def describe(cfg: BackboneConfig, stem: str | None = None) -> str:
    """The backbone in a few words: ``timm convnext_atto`` or ``resnet18 width=0.5 stem=cifar``."""
    if cfg.name in LIBRARY_BACKBONES:
        return f"{cfg.name} {cfg.model}" + (" stem=cifar" if cfg.stem == "cifar" else "")
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


def _dry_run(model: nn.Module, in_channels: int, image_size: int, what: str, hooks: dict[str, nn.Module], order=None):
    """One forward pass of two blank images in eval mode: the output and each hooked module's output (and, in
    ``order``, the hooked modules' names in the order they first ran)."""
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
    if order is not None:
        order.extend(outputs)
    return features, outputs


def _feature_dim(features: torch.Tensor, what: str) -> int:
    if features.ndim != 2:
        raise ValueError(f"{what} gives {tuple(features.shape)} features, not (batch, dim); choose another model")
    return features.shape[1]


def _describe_map(what: str, image_size: int, output: torch.Tensor | None, channels: int) -> None:
    if output is not None and output.ndim == 4:
        h, w = output.shape[2:] if output.shape[1] == channels else output.shape[1:3]
        log.info("%s: %d px images reach a %dx%d feature map before pooling", what, image_size, h, w)


def small_stem(model: nn.Module, what: str, in_channels: int, image_size: int) -> list[tuple[str, str]]:
    """``backbone.stem=cifar`` for a library CNN: its first convolution at stride 1, and the first max-pool that runs
    before the next strided convolution (a ResNet's, a DenseNet's) replaced by ``nn.Identity``: small images keep 4x
    more positions. The weights keep their shapes: the library's model loads the export, then takes these changes."""
    if getattr(model, "patch_embed", None) is not None:
        raise ValueError(f"backbone.stem=cifar is for CNNs; {what} embeds patches: set backbone.patch_size instead")
    order: list[str] = []
    hooks = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d))}
    _dry_run(model, in_channels, max(image_size, 224), what, hooks, order=order)  # the order: a size it takes
    convs = [n for n in order if isinstance(hooks[n], nn.Conv2d)]
    if not convs:
        raise ValueError(f"backbone.stem=cifar: {what} has no convolution to make stride 1")
    changes = []
    if hooks[convs[0]].stride != (1, 1):
        hooks[convs[0]].stride = (1, 1)
        changes.append((f"{convs[0]}.stride", "(1, 1)"))
    strided = [n for n in convs[1:] if hooks[n].stride != (1, 1)]
    before = order[: order.index(strided[0])] if strided else order
    pool = next((n for n in before if isinstance(hooks[n], nn.MaxPool2d)), None)
    if pool is not None:
        _replace(model, pool, nn.Identity())
        changes.append((pool, "torch.nn.Identity()"))
    log.info("%s: backbone.stem=cifar: %s", what, ", ".join(f"{p} = {e}" for p, e in changes) or "nothing to change")
    return changes


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
    changes = small_stem(model, what, in_channels, image_size) if cfg.stem == "cifar" else []
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
        changes=changes,
        input_shape=(in_channels, image_size),
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
    parent, _, leaf = head.rpartition(".")
    if parent and leaf.isdigit() and int(leaf) > 0:  # the classifier's dropout on the features goes with it
        before = f"{parent}.{int(leaf) - 1}"
        if isinstance(model.get_submodule(before), nn.Dropout):
            _replace(model, before, nn.Identity())
            changes.append((before, "torch.nn.Identity()"))
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
    if cfg.stem == "cifar":
        changes += small_stem(model, what, in_channels, image_size)
    # stages: the last module (in execution order) at each feature-map stride; the last four strides
    pools = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)  # the head's pooling is not a stage
    candidates = {n: m for n, m in model.named_modules() if n and n.count(".") <= 1 and not isinstance(m, pools)}
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
        input_shape=(in_channels, image_size),
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
        steps = [f"import timm, torch; m = timm.create_model({', '.join(args)}, checkpoint_path={out!r})"]
        return "; ".join(steps + [f"m{_attribute(path)} = {expression}" for path, expression in backbone.changes])
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
    return ModuleBackbone(model, "module", qualified_name(model), [], [], dim, input_shape=(in_channels, image_size))
