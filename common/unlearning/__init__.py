"""Unlearning methods (ReMI and baselines) behind one interface; see ``base``.

Importing this package registers every method.
"""

from fedunlearn.common.unlearning import baselines, fisher, projected_ascent, remi, salun  # noqa: F401  (registration)
from fedunlearn.common.unlearning.base import (
    METHODS,
    UnlearningResult,
    UnlearningTask,
    parse_params,
    run_method,
)

__all__ = ["METHODS", "UnlearningResult", "UnlearningTask", "parse_params", "run_method"]
