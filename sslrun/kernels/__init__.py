"""Optional Triton kernels. Nothing here imports ``triton``: the kernel modules are imported only when asked for."""

from __future__ import annotations

import functools
import os

import torch

_TRUTHY = {"1", "true", "on", "yes"}


def triton_interpreting() -> bool:
    """True when ``TRITON_INTERPRET`` asks Triton to run kernels on the CPU with NumPy (tests and CI)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in _TRUTHY


@functools.cache
def triton_import_error() -> str | None:
    """Why ``import triton`` fails, or None when it works."""
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def triton_unavailable_reason(device: torch.device) -> str | None:
    """One-line reason the Triton kernels cannot run on tensors on ``device``, or None when they can."""
    error = triton_import_error()
    if error is not None:
        return f"triton is not installed ({error})"
    if device.type != "cuda" and not triton_interpreting():
        return f"inputs are on {device.type}; the Triton kernels need CUDA (or TRITON_INTERPRET=1, a slow CPU emulator)"
    return None
