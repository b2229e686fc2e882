"""ROC statistics on scores whose right answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from fedunlearn.common.audit.roc import auc_confidence_interval, roc_auc, roc_curve, tpr_at_fpr
from fedunlearn.common.errors import ConfigError


def _gaussian_scores(shift: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Members ~ N(shift, 1), non-members ~ N(0, 1): the true AUC is Phi(shift / sqrt 2)."""
    rng = np.random.default_rng(seed)
    return rng.normal(shift, 1.0, n), rng.normal(0.0, 1.0, n)


@pytest.mark.parametrize(
    ("members", "nonmembers", "expected"),
    [
        ([5.0, 6.0, 7.0], [1.0, 2.0], 1.0),  # separable
        ([1.0, 2.0], [5.0, 6.0, 7.0], 0.0),  # reversed
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 0.5),  # identical
        ([4.0, 4.0], [4.0], 0.5),  # all tied
        ([1.0, 2.0], [2.0, 0.0], 0.625),  # pairs: 0 + 1 + 1/2 + 1 over 4
    ],
)
def test_auc_known_values(members: list[float], nonmembers: list[float], expected: float) -> None:
    assert roc_auc(np.array(members), np.array(nonmembers)) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_sklearn_with_and_without_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    members, nonmembers = rng.normal(0.3, 1, 57), rng.normal(0, 1, 83)
    for m, n in ((members, nonmembers), (np.round(members), np.round(nonmembers))):
        labels = np.r_[np.ones(m.size), np.zeros(n.size)]
        assert roc_auc(m, n) == pytest.approx(roc_auc_score(labels, np.r_[m, n]))


def test_roc_curve_hand_example_and_area() -> None:
    fpr, tpr = roc_curve(np.array([3.0, 2.0]), np.array([2.0, 1.0]))
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0.0, 0.5, 1.0, 1.0])
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(np.array([3.0, 2.0]), np.array([2.0, 1.0])))


def test_roc_curve_is_monotone_from_origin_to_corner() -> None:
    members, nonmembers = _gaussian_scores(1.0, 200, seed=1)
    fpr, tpr = roc_curve(members, nonmembers)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(members, nonmembers))


def test_tpr_at_fpr_hand_made() -> None:
    nonmembers = np.arange(100.0)  # 0..99: each one is 1% FPR
    members = np.array([150.0, 99.5, 98.5, 50.0])
    assert tpr_at_fpr(members, nonmembers, 0.0) == 0.5  # above every non-member
    assert tpr_at_fpr(members, nonmembers, 0.01) == 0.75  # threshold 98.5 lets only 99 through
    assert tpr_at_fpr(members, nonmembers, 1.0) == 1.0


def test_tpr_at_fpr_with_too_few_nonmembers_is_tpr_at_zero_fpr() -> None:
    nonmembers = np.arange(100.0)  # 1/0.001 = 1000 would be needed
    members = np.array([150.0, 99.5, 98.5, 50.0])
    assert tpr_at_fpr(members, nonmembers, 0.001) == tpr_at_fpr(members, nonmembers, 0.0) == 0.5


def test_delong_interval_covers_the_true_auc_about_as_often_as_promised() -> None:
    shift = 0.8
    truth = norm.cdf(shift / np.sqrt(2))
    covered = [
        low <= truth <= high
        for low, high in (auc_confidence_interval(*_gaussian_scores(shift, 150, seed)) for seed in range(300))
    ]
    assert 0.90 <= np.mean(covered) <= 0.99  # 95% promised; 300 draws give +-0.013


def test_interval_contains_the_estimate_and_shrinks_with_n() -> None:
    widths = []
    for n in (100, 1000):
        members, nonmembers = _gaussian_scores(0.5, n, seed=3)
        low, high = auc_confidence_interval(members, nonmembers)
        assert low < roc_auc(members, nonmembers) < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2.5  # about sqrt(10) narrower


def test_bootstrap_roughly_agrees_with_delong_and_is_seeded() -> None:
    members, nonmembers = _gaussian_scores(0.7, 300, seed=4)
    delong = auc_confidence_interval(members, nonmembers, method="delong")
    boot = auc_confidence_interval(members, nonmembers, method="bootstrap", n_boot=400, seed=1)
    np.testing.assert_allclose(boot, delong, atol=0.02)
    assert boot == auc_confidence_interval(members, nonmembers, method="bootstrap", n_boot=400, seed=1)


def test_interval_is_vacuous_with_a_single_sample_in_a_group() -> None:
    assert auc_confidence_interval(np.array([1.0]), np.array([0.0, 2.0])) == (0.0, 1.0)


def test_interval_is_clipped_to_unit_range() -> None:
    low, high = auc_confidence_interval(np.array([2.0, 3.0, 9.0]), np.array([0.0, 1.0, 2.5]))
    assert 0.0 <= low <= high <= 1.0


@pytest.mark.parametrize(
    ("members", "nonmembers", "error", "match"),
    [
        (np.array([]), np.array([1.0]), ConfigError, "member set is empty"),
        (np.array([1.0]), np.array([]), ConfigError, "non-member set is empty"),
        (np.ones((2, 2)), np.array([1.0]), ValueError, "1-D"),
        (np.array([np.nan]), np.array([1.0]), ValueError, "NaN"),
    ],
)
def test_bad_scores_are_rejected(
    members: np.ndarray, nonmembers: np.ndarray, error: type, match: str
) -> None:
    for call in (roc_auc, roc_curve, auc_confidence_interval):
        with pytest.raises(error, match=match):
            call(members, nonmembers)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"level": 1.0}, "level"),
        ({"method": "jackknife"}, "valid: delong, bootstrap"),
        ({"method": "bootstrap", "n_boot": 0}, "n_boot"),
    ],
)
def test_bad_interval_options_are_config_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        auc_confidence_interval(np.array([1.0, 2.0]), np.array([0.0, 1.0]), **kwargs)  # type: ignore[arg-type]


def test_bad_target_fpr_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="fraction"):
        tpr_at_fpr(np.array([1.0]), np.array([0.0]), 1.5)
