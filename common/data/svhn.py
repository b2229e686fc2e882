"""Reader for SVHN's official ``*_32x32.mat`` files.

Read with scipy directly (torchvision's class checks md5 sums); label 10
stands for the digit 0 in these files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError

from fedunlearn.common.data.sources import corrupt_file_error

__all__ = ["read_svhn_mat"]

# scipy raises a mix of these on truncated or foreign files.
_LOAD_ERRORS = (MatReadError, OSError, ValueError, IndexError, TypeError, KeyError)


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 in 0..9."""
    try:
        content = scipy.io.loadmat(path)
    except _LOAD_ERRORS as exc:
        raise corrupt_file_error(path, str(exc)) from exc
    x, y = content.get("X"), content.get("y")
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise corrupt_file_error(path, "its 'X' is not a (32, 32, 3, N) array")
    if not isinstance(y, np.ndarray) or y.size != x.shape[3]:
        raise corrupt_file_error(path, "its 'y' does not hold one label per image")
    labels = y.reshape(-1).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 10):
        raise corrupt_file_error(path, f"its labels span {labels.min()}..{labels.max()}, not 1..10")
    # (H, W, C, N) -> (N, C, H, W); the files label the digit 0 as 10.
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1)).astype(np.uint8, copy=False)
    return images, labels % 10
