"""Read-only array fields on frozen dataclasses."""

from __future__ import annotations

import numpy as np

__all__ = ["store_read_only"]


def store_read_only(instance: object, **arrays: np.ndarray) -> None:
    """Set each field of the frozen dataclass ``instance`` to its (already private) array, made read-only, so
    that figures derived and cached from it can never go stale."""
    for name, array in arrays.items():
        array.flags.writeable = False
        object.__setattr__(instance, name, array)
