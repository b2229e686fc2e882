"""MIA-Efficacy on confidences whose membership verdict is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from fedunlearn.common.audit.efficacy import mia_efficacy
from fedunlearn.common.audit.signals import Signals, signals_from_logits
from fedunlearn.common.errors import ConfigError


def _with_confidence(p_y: np.ndarray) -> Signals:
    """Binary logits [logit(p), 0] with label 0, so that the confidence p_y is exactly ``p_y``."""
    logits = np.stack([np.log(p_y) - np.log1p(-p_y), np.zeros_like(p_y)], axis=1)
    return signals_from_logits(logits, np.zeros(p_y.size, dtype=np.int64))


RNG = np.random.default_rng(0)
RETAIN = _with_confidence(RNG.uniform(0.95, 0.999, 600))  # members: near-certain
TEST = _with_confidence(RNG.uniform(0.2, 0.7, 300))  # non-members: unsure


def test_forget_like_retain_is_never_called_non_member() -> None:
    forget = _with_confidence(RNG.uniform(0.96, 0.99, 100))
    assert mia_efficacy(RETAIN, TEST, forget) == pytest.approx(0.0, abs=2.0)


def test_forget_like_test_is_always_called_non_member() -> None:
    forget = _with_confidence(RNG.uniform(0.25, 0.65, 100))
    assert mia_efficacy(RETAIN, TEST, forget) == pytest.approx(100.0, abs=2.0)


def test_half_and_half_forget_set_scores_half() -> None:
    forget = _with_confidence(np.r_[np.full(50, 0.98), np.full(50, 0.4)])
    assert mia_efficacy(RETAIN, TEST, forget) == pytest.approx(50.0)


def test_seeded_and_capped() -> None:
    forget = _with_confidence(RNG.uniform(0.5, 1.0 - 1e-6, 200))
    first = mia_efficacy(RETAIN, TEST, forget, seed=3, max_train=50)
    assert first == mia_efficacy(RETAIN, TEST, forget, seed=3, max_train=50)
    assert 0.0 <= first <= 100.0


@pytest.mark.parametrize("empty", ["retain", "test", "forget"])
def test_empty_sets_are_config_errors(empty: str) -> None:
    sets = {"retain": RETAIN, "test": TEST, "forget": TEST}
    sets[empty] = TEST.subset(np.zeros(len(TEST), dtype=bool))
    with pytest.raises(ConfigError, match=f"non-empty {empty} set"):
        mia_efficacy(sets["retain"], sets["test"], sets["forget"])


def test_bad_cap_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="max_train"):
        mia_efficacy(RETAIN, TEST, TEST, max_train=0)
