"""U-LiRA's likelihood-ratio accuracy on constructed shadow statistics with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from fedunlearn.common.audit.calibrated import PER_EXAMPLE_VARIANCE_MIN
from fedunlearn.common.audit.ulira import ulira_accuracy
from fedunlearn.common.errors import ConfigError


def _world(shadows: int, targets: int, shift: float, *, seed: int = 0, share: float = 1.0,
           spread: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each target has its own difficulty μ_t (spread 3, far wider than the effect); retrained models
    output N(μ_t, 1), unlearned ones N(μ_t + shift, spread²). Each target is forgotten in a random
    ``share`` of the shadows. Returns (unlearned, retrained, forgotten), each (S, T)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0.0, 3.0, targets)
    retrained = mu + rng.normal(0.0, 1.0, (shadows, targets))
    unlearned = mu + shift + rng.normal(0.0, spread, (shadows, targets))
    forgotten = rng.random((shadows, targets)) < share
    return unlearned, retrained, forgotten


def test_identical_distributions_read_chance() -> None:
    result = ulira_accuracy(*_world(16, 2000, shift=0.0))
    assert result.accuracy == pytest.approx(0.5, abs=0.01)
    assert result.shadows == 16 and result.targets == 2000 and result.cases == 16 * 2000
    assert not result.per_example_variance


def test_leave_one_out_keeps_few_shadows_at_chance() -> None:
    """With 4 shadows a fit that saw the held-out output would sit a quarter of the way towards it and
    score well above 0.5; held out, it reads chance."""
    result = ulira_accuracy(*_world(4, 5000, shift=0.0, seed=1))
    assert result.accuracy == pytest.approx(0.5, abs=0.01)


def test_well_separated_distributions_are_always_told_apart() -> None:
    assert ulira_accuracy(*_world(8, 500, shift=12.0, seed=2)).accuracy > 0.999


@pytest.mark.parametrize(("shadows", "per_example"), [(24, False), (PER_EXAMPLE_VARIANCE_MIN + 40, True)])
@pytest.mark.parametrize("shift", [0.5, 1.0, 2.0])
def test_a_known_shift_gives_the_analytic_accuracy(shift: float, shadows: int, per_example: bool) -> None:
    """Equal-variance Gaussians d sigmas apart: the best test splits at the midpoint and is right with
    probability Φ(d/2). Means fitted on n shadows are off by about σ·sqrt(2/n), which costs the test
    about a hundredth at d = 0.5 and n = 23, less at larger shifts or more shadows."""
    result = ulira_accuracy(*_world(shadows, 4000 if not per_example else 400, shift=shift, seed=3))
    assert result.per_example_variance is per_example
    assert result.accuracy == pytest.approx(float(norm.cdf(shift / 2)), abs=0.015)


def test_a_wider_unlearned_spread_is_detected_with_no_mean_shift() -> None:
    """Each Gaussian has its own spread: σ_U = 3σ_R with equal means is still a difference."""
    result = ulira_accuracy(*_world(16, 2000, shift=0.0, spread=3.0, seed=4))
    # the likelihood ratio of N(0, 9) vs N(0, 1) calls "unlearned" when |v| > c = 1.5·sqrt(ln 3), so the
    # balanced accuracy is (P(|U| > c) + P(|R| < c)) / 2 = 1/2 + Φ(c) - Φ(c/3)
    c = 1.5 * np.sqrt(np.log(3.0))
    expected = 0.5 + norm.cdf(c) - norm.cdf(c / 3)
    assert result.accuracy == pytest.approx(float(expected), abs=0.02)
    assert result.accuracy > 0.6


def test_only_forgotten_entries_count() -> None:
    unlearned, retrained, forgotten = _world(16, 1000, shift=1.0, seed=5, share=0.5)
    reference = ulira_accuracy(unlearned, retrained, forgotten)
    junk = unlearned.copy()
    junk[~forgotten] = np.nan  # a shadow that never forgot a target has no unlearned output for it
    assert ulira_accuracy(junk, retrained, forgotten) == reference
    assert reference.cases == int(forgotten.sum())


def test_targets_forgotten_once_are_not_scored() -> None:
    unlearned, retrained, forgotten = _world(6, 10, shift=1.0, seed=6)
    forgotten[:, :4] = False
    forgotten[0, :4] = True  # forgotten in one shadow only: nothing to fit it on
    result = ulira_accuracy(unlearned, retrained, forgotten)
    assert result.targets == 6
    assert result.cases == int(forgotten[:, 4:].sum())


def test_identical_outputs_are_ties_at_one_half() -> None:
    same = np.tile(np.arange(5.0), (4, 1))
    result = ulira_accuracy(same, same.copy(), np.ones((4, 5), dtype=bool))
    assert result.accuracy == 0.5


def test_no_target_forgotten_twice_is_a_config_error() -> None:
    forgotten = np.eye(4, dtype=bool)
    with pytest.raises(ConfigError, match="at least 2"):
        ulira_accuracy(np.zeros((4, 4)), np.zeros((4, 4)), forgotten)


def test_no_spread_to_pool_is_a_config_error() -> None:
    forgotten = np.zeros((2, 3), dtype=bool)
    forgotten[:, 0] = True  # one target, two shadows: each fit has one value and no spread
    with pytest.raises(ConfigError, match="spread"):
        ulira_accuracy(np.zeros((2, 3)), np.ones((2, 3)), forgotten)


@pytest.mark.parametrize(("shapes", "message"), [
    (((3, 4), (3, 4), (3, 5)), "one shape"),
    (((12,), (12,), (12,)), "one shape"),
])
def test_bad_shapes_are_value_errors(shapes: tuple[tuple[int, ...], ...], message: str) -> None:
    u, r, m = (np.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=message):
        ulira_accuracy(u, r, m.astype(bool))


def test_non_finite_forgotten_outputs_are_value_errors() -> None:
    unlearned, retrained, forgotten = _world(4, 5, shift=0.0)
    unlearned[0, 0], forgotten[0, 0] = np.inf, True
    with pytest.raises(ValueError, match="NaN or Inf"):
        ulira_accuracy(unlearned, retrained, forgotten)
