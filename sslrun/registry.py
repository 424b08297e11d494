"""Name -> builder registries. Every method, backbone, dataset and optimizer is looked up through one of these."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of builders filled by the ``@registry.register("name")`` decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ValueError(unknown_name_message(self.kind, name, self.names()))
        return self._entries[name]

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        builder = self.get(name)
        return builder(*args, **kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


def unknown_name_message(kind: str, name: str, choices: list[str]) -> str:
    """'unknown method 'simclrr' (did you mean 'simclr'?); choose one of: a, b, c'."""
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kind} {name!r}{hint}; choose one of: {', '.join(choices)}"
