"""The few functions of the normal distribution that the audit needs, on ``scipy.special``.

``scipy.stats`` gives the same numbers but takes most of a second to import, and a SuperNode starts a
fresh ClientApp process, which imports the audit, for every message it is sent.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr, ndtri

__all__ = ["log_cdf", "log_pdf", "quantile", "upper_quantile"]

_LOG_SQRT_2PI = 0.5 * float(np.log(2.0 * np.pi))


def log_pdf(x: np.ndarray, mean: np.ndarray | float, std: np.ndarray | float) -> np.ndarray:
    """log N(x; mean, std²), elementwise."""
    z = (np.asarray(x, dtype=np.float64) - mean) / std
    return np.asarray(-0.5 * z * z - np.log(std) - _LOG_SQRT_2PI)


def log_cdf(z: np.ndarray) -> np.ndarray:
    """log Φ(z), accurate far into the lower tail."""
    return np.asarray(log_ndtr(np.asarray(z, dtype=np.float64)))


def quantile(p: float) -> float:
    """Φ⁻¹(p): the z below which the standard normal lies with probability p."""
    return float(ndtri(p))


def upper_quantile(p: float) -> float:
    """The z above which the standard normal lies with probability p (exact for tiny p)."""
    return -float(ndtri(p))
