"""What the bench's reference models expect of each sample they did not train on.

ReMI (``common.unlearning.remi``) measures membership as the excess of a
sample's statistic over what models that never trained on it give it
(``UnlearningTask.expected_confidence``). The bench's K references each train
on a random half of the retain set, so for a retain sample only the references
whose half left it out may inform that expectation; a reference that trained on
it would expect it to look remembered, and ReMI would then stop short of
forgetting it. Forget and hold-out samples are OUT for every reference.

Everything here is a pure numpy function of the references' statistics and
their IN mask (``Calibration``), keyed by sample id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedunlearn.common.audit.calibrated import Calibration
from fedunlearn.common.readonly import store_read_only

__all__ = ["SampleStatistics", "expected_confidence", "out_mean"]


@dataclass(frozen=True, eq=False)
class SampleStatistics:
    """K references' view of N samples, by sample id.

    ids: (N,) int64 sample ids, distinct (one id space: the dataset's train split, which holds the
        pool and the hold-out; test ids would collide and are kept apart).
    calibration: (K, N) logit confidence and IN mask (reference k trained on sample n).
    """

    ids: np.ndarray
    calibration: Calibration

    def __post_init__(self) -> None:
        ids = np.array(self.ids, dtype=np.int64)
        if ids.shape != (len(self.calibration),):
            raise ValueError(f"ids must be ({len(self.calibration)},), one per column, got shape {ids.shape}")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("sample ids repeat: each sample must have one column")
        store_read_only(self, ids=ids)

    def trained_on(self, reference: int) -> frozenset[int]:
        """The ids reference ``reference`` trained on (its half of the retain set)."""
        return frozenset(self.ids[self.calibration.inside[reference]].tolist())


def out_mean(calibration: Calibration) -> np.ndarray:
    """(N,) the mean statistic over the references that did not train on each sample; NaN where all did."""
    out = ~calibration.inside
    counts = out.sum(axis=0)
    sums = np.where(out, calibration.statistic, 0.0).sum(axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def expected_confidence(statistics: SampleStatistics) -> dict[int, float]:
    """Sample id -> the OUT references' mean statistic; a sample every reference trained on is left out
    (ReMI then uses its raw statistic, as for any sample it has no expectation of)."""
    means = out_mean(statistics.calibration)
    return {int(i): float(m) for i, m in zip(statistics.ids.tolist(), means.tolist(), strict=True)
            if not np.isnan(m)}
