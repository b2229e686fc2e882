"""Reader for the official CIFAR-10/100 python pickle batches.

We read the pickles ourselves because torchvision's classes insist on the
official md5 sums. Pickle can run arbitrary code, so the unpickler only builds
the numpy arrays and plain containers these files hold.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from fedunlearn.common.data.sources import corrupt_file_error

__all__ = ["read_cifar_batches", "read_cifar_names"]

# Everything a CIFAR batch needs: numpy arrays, their dtypes, and (for pickles
# written by Python 3 at protocol 2) the bytes constructor.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)
_IMAGE_SHAPE = (3, 32, 32)
# What a malformed pickle raises while loading, besides the pickle errors themselves.
_LOAD_ERRORS = (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError)


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR file never does")
        return super().find_class(module, name)


def _read_pickle(path: Path) -> dict[str, object]:
    """A batch's dict with str keys (the files were written by Python 2, hence latin1)."""
    try:
        with path.open("rb") as stream:
            content = _ArrayOnlyUnpickler(stream, encoding="latin1").load()
    except _LOAD_ERRORS as exc:
        raise corrupt_file_error(path, str(exc)) from exc
    if not isinstance(content, dict):
        raise corrupt_file_error(path, f"it holds a {type(content).__name__}, not a dict")
    return {key.decode("latin1") if isinstance(key, bytes) else str(key): v for key, v in content.items()}


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _read_pickle(path)
    data, labels = batch.get("data"), batch.get(label_key)
    pixels = int(np.prod(_IMAGE_SHAPE))
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != pixels:
        raise corrupt_file_error(path, f"its 'data' is not an (N, {pixels}) array")
    if not isinstance(labels, list | np.ndarray) or len(labels) != data.shape[0]:
        raise corrupt_file_error(path, f"its {label_key!r} does not hold one label per image")
    try:
        label_array = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise corrupt_file_error(path, f"its {label_key!r} are not integers ({exc})") from exc
    return data.astype(np.uint8, copy=False).reshape(-1, *_IMAGE_SHAPE), label_array


def read_cifar_batches(paths: list[Path], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate batches: images (N, 3, 32, 32) uint8 and labels (N,) int64, in file order."""
    parts = [_read_batch(path, label_key) for path in paths]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def read_cifar_names(path: Path, names_key: str, expected: int) -> tuple[str, ...]:
    """Class names from the meta file (``label_names`` or ``fine_label_names``)."""
    names = _read_pickle(path).get(names_key)
    if not isinstance(names, list) or len(names) != expected:
        raise corrupt_file_error(path, f"its {names_key!r} is not a list of {expected} class names")
    return tuple(str(name) for name in names)
