"""Reference-model attacks on constructed statistics with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from fedunlearn.common.audit.attacks import ATTACKS
from fedunlearn.common.audit.calibrated import CALIBRATED_ATTACKS, Calibration, lira_scores, rmia_scores
from fedunlearn.common.audit.roc import roc_auc, tpr_at_fpr
from fedunlearn.common.errors import ConfigError, UnknownNameError


def _difficult_world(n: int, k: int, shift: float, seed: int = 0) -> tuple[np.ndarray, Calibration, np.ndarray]:
    """Each sample has its own difficulty μ_n (spread 3, far wider than the membership shift); OUT
    references see N(μ_n, 1); the audited model sees N(μ_n + shift·member, 1). Returns (target,
    offline calibration, member mask) with the first half members."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0.0, 3.0, n)
    member = np.arange(n) < n // 2
    refs = mu + rng.normal(0.0, 1.0, (k, n))
    target = mu + shift * member + rng.normal(0.0, 1.0, n)
    return target, Calibration.offline(refs), member


def test_offline_lira_recovers_the_per_example_auc_a_threshold_cannot() -> None:
    target, refs, member = _difficult_world(4000, 64, shift=1.5)
    scores = lira_scores(target, refs)
    expected = float(norm.cdf(1.5 / np.sqrt(2.0)))  # members N(1.5, 1) vs non-members N(0, 1)
    assert roc_auc(scores[member], scores[~member]) == pytest.approx(expected, abs=0.02)
    # the raw statistic carries the same shift but drowns in per-sample difficulty
    assert roc_auc(target[member], target[~member]) < expected - 0.15


def test_lira_reads_chance_when_nobody_is_a_member() -> None:
    target, refs, _ = _difficult_world(4000, 8, shift=0.0)
    scores = lira_scores(target, refs)
    assert roc_auc(scores[:2000], scores[2000:]) == pytest.approx(0.5, abs=0.03)


def test_online_lira_is_the_gaussian_likelihood_ratio() -> None:
    rng = np.random.default_rng(1)
    n, k, shift = 50, 4000, 2.0
    mu = rng.normal(0.0, 3.0, n)
    inside = np.zeros((k, n), dtype=bool)
    inside[: k // 2] = True
    refs = mu + shift * inside + rng.normal(0.0, 1.0, (k, n))
    phi = mu + 0.7
    scores = lira_scores(phi, Calibration(refs, inside))
    expected = norm.logpdf(phi, mu + shift, 1.0) - norm.logpdf(phi, mu, 1.0)  # = shift·0.7 - shift²/2
    np.testing.assert_allclose(scores, expected, atol=0.15)
    assert Calibration(refs, inside).has_in_models


def test_lira_uses_offline_when_no_reference_trained_on_the_samples() -> None:
    target, refs, _ = _difficult_world(100, 4, shift=1.0)
    assert not refs.has_in_models
    np.testing.assert_allclose(lira_scores(target, refs), lira_scores(target, refs, online=False))
    with pytest.raises(ConfigError, match="no IN reference"):
        lira_scores(target, refs, online=True)


def test_lira_needs_two_references_to_know_their_spread() -> None:
    target, refs, _ = _difficult_world(10, 1, shift=1.0)
    with pytest.raises(ConfigError, match="at least 2 OUT"):
        lira_scores(target, refs)


def test_rmia_detects_members_and_its_scores_are_population_shares() -> None:
    target, refs, member = _difficult_world(2000, 4, shift=2.0)
    others = ~member
    member_scores = rmia_scores(target[member], refs.subset(member), target[others], refs.subset(others))
    other_scores = rmia_scores(target[others], refs.subset(others), target[others], refs.subset(others),
                               target_is_population=True)
    assert member_scores.min() >= 0.0 and max(member_scores.max(), other_scores.max()) <= 1.0
    # non-members are shares of the others: uniform on {0, 1/(M-1), ..., 1} up to ties
    assert other_scores.mean() == pytest.approx(0.5, abs=0.01)
    assert roc_auc(member_scores, other_scores) > roc_auc(target[member], target[others]) + 0.1


def test_rmia_offline_correction_changes_scores_and_is_bounded() -> None:
    target, refs, _ = _difficult_world(200, 4, shift=1.0)
    plain = rmia_scores(target, refs, target, refs, offline_a=1.0, target_is_population=True)
    corrected = rmia_scores(target, refs, target, refs, offline_a=0.3, target_is_population=True)
    assert not np.allclose(plain, corrected)
    with pytest.raises(ConfigError, match="offline a"):
        rmia_scores(target, refs, target, refs, offline_a=1.5)
    with pytest.raises(ConfigError, match="gamma"):
        rmia_scores(target, refs, target, refs, gamma=0.5)


def test_every_calibrated_attack_beats_every_population_attack_on_hard_members() -> None:
    """The contract: on memorised-but-hard samples, each reference attack has a higher TPR at 1% FPR."""
    target, refs, member = _difficult_world(6000, 16, shift=2.5, seed=3)
    raw_tpr = tpr_at_fpr(target[member], target[~member], 0.01)
    for name in CALIBRATED_ATTACKS.names():
        scores_in, scores_out = CALIBRATED_ATTACKS.get(name)(target[member], refs.subset(member),
                                                              target[~member], refs.subset(~member))
        assert tpr_at_fpr(scores_in, scores_out, 0.01) > 3 * raw_tpr, name
    assert set(CALIBRATED_ATTACKS.names()).isdisjoint(ATTACKS.names())


def test_bad_inputs_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="inside mask"):
        Calibration(np.zeros((2, 3)), np.zeros((2, 4), dtype=bool))
    with pytest.raises(ValueError, match="NaN"):
        Calibration.offline(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        lira_scores(np.zeros(2), Calibration.offline(np.zeros((4, 3))))
    with pytest.raises(UnknownNameError, match="lira"):
        CALIBRATED_ATTACKS.get("likelihood")


def test_a_calibration_holds_private_read_only_copies() -> None:
    statistic, inside = np.zeros((2, 3)), np.zeros((2, 3), dtype=bool)
    calibration = Calibration(statistic, inside)
    statistic[0, 0], inside[0, 0] = 9.0, True
    assert calibration.statistic[0, 0] == 0.0 and not calibration.inside[0, 0]
    for array in (calibration.statistic, calibration.inside):
        with pytest.raises(ValueError, match="read-only"):
            array[0, 0] = 1
