"""``sslrun list``: every registered method, backbone, dataset, optimizer and loss backend, one line each."""

from __future__ import annotations

import inspect

from sslrun import console
from sslrun.backbones import BACKBONES
from sslrun.data import DATASETS
from sslrun.losses import NT_XENT_BACKENDS
from sslrun.methods import METHODS
from sslrun.optim import OPTIMIZERS
from sslrun.registry import Registry


def _describe(obj: object) -> str:
    return (inspect.getdoc(obj) or "").splitlines()[0] if inspect.getdoc(obj) else ""


def rows(registries: dict[str, Registry]):
    for kind, registry in registries.items():
        for name in registry.names():
            yield kind, name, _describe(registry.get(name))


def main(argv: list[str]) -> None:
    registries = {"method": METHODS, "backbone": BACKBONES, "data": DATASETS, "optim": OPTIMIZERS}
    backends = [("loss backend", name, "method.loss_backend=" + name) for name in NT_XENT_BACKENDS]
    console.print_rows("sslrun registry", [*rows(registries), *backends])
