"""Device choice: ``auto`` picks CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

from typing import Literal

import torch

from fedunlearn.common.errors import ConfigError

__all__ = ["DEVICE_NAMES", "DeviceName", "resolve_device"]

DeviceName = Literal["auto", "cpu", "cuda", "mps"]
DEVICE_NAMES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def resolve_device(name: str) -> torch.device:
    """Turn a device name into a torch.device, failing loudly if it is absent."""
    if name not in DEVICE_NAMES:
        raise ConfigError(f"unknown device {name!r}; valid: {', '.join(DEVICE_NAMES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but torch sees no CUDA GPU; use --device cpu or auto")
    if name == "mps" and not _mps_available():
        raise ConfigError("device 'mps' requested but this torch build has no MPS; use --device cpu or auto")
    return torch.device(name)
