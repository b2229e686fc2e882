"""The audit's normal-distribution functions and average ranks agree with scipy.stats, which they replace
to keep the ClientApp's imports light."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fedunlearn.common.audit import normal
from fedunlearn.common.audit.roc import _average_ranks, roc_auc


def test_log_pdf_and_log_cdf_match_scipy_far_into_the_tails() -> None:
    x = np.linspace(-40.0, 40.0, 801)
    assert np.allclose(normal.log_pdf(x, 1.5, np.full_like(x, 2.5)), stats.norm.logpdf(x, 1.5, 2.5))
    assert np.allclose(normal.log_cdf(x), stats.norm.logcdf(x), rtol=1e-10)
    assert np.isfinite(normal.log_cdf(np.array([-40.0]))).all()  # where Φ itself underflows


@pytest.mark.parametrize("p", [1e-12, 1e-6, 0.01, 0.3, 0.5, 0.975])
def test_quantiles_match_scipy(p: float) -> None:
    assert normal.quantile(p) == pytest.approx(stats.norm.ppf(p), rel=1e-12)
    assert normal.upper_quantile(p) == pytest.approx(stats.norm.isf(p), rel=1e-12)


def test_average_ranks_match_scipy_with_ties() -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 7, size=200).astype(np.float64)  # many ties
    assert np.array_equal(_average_ranks(values), stats.rankdata(values))
    distinct = rng.normal(size=50)
    assert np.array_equal(_average_ranks(distinct), stats.rankdata(distinct))


def test_auc_with_ties_is_the_mann_whitney_statistic() -> None:
    members, nonmembers = np.array([1.0, 2.0, 2.0, 3.0]), np.array([2.0, 0.0, 2.0])
    u = stats.mannwhitneyu(members, nonmembers).statistic
    assert roc_auc(members, nonmembers) == pytest.approx(u / (members.size * nonmembers.size))
