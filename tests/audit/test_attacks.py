"""Contract tests over every registered attack, on constructed members and non-members."""

from __future__ import annotations

import numpy as np
import pytest

from fedunlearn.common.audit.attacks import ATTACKS, AttackResult, attack_scores, run_attack, run_attacks
from fedunlearn.common.audit.signals import Signals, signals_from_logits
from fedunlearn.common.errors import ConfigError, UnknownNameError


def _confident(margins: np.ndarray, k: int = 3) -> Signals:
    """Label 0 whose logit leads the others by ``margins``: bigger margin, more member-like."""
    logits = np.zeros((margins.size, k))
    logits[:, 0] = margins
    return signals_from_logits(logits, np.zeros(margins.size, dtype=np.int64))


MEMBERS = _confident(np.linspace(6.0, 9.0, 40))
NONMEMBERS = _confident(np.linspace(0.0, 3.0, 60))


def test_the_design_attacks_are_registered() -> None:
    assert set(ATTACKS.names()) >= {"loss", "confidence", "entropy", "modified_entropy"}


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_returns_one_finite_score_per_sample(name: str) -> None:
    scores = attack_scores(name, MEMBERS)
    assert scores.shape == (len(MEMBERS),)
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_separates_confident_members(name: str) -> None:
    result = run_attack(name, MEMBERS, NONMEMBERS)
    assert result == AttackResult(name, 1.0, 100.0, 100.0)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_reversed_roles_scores_zero(name: str) -> None:
    assert run_attack(name, NONMEMBERS, MEMBERS).auc == 0.0


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_cannot_tell_identical_sets_apart(name: str) -> None:
    result = run_attack(name, NONMEMBERS, NONMEMBERS)
    assert result.auc == pytest.approx(0.5)


def test_modified_entropy_tells_confidently_wrong_from_confidently_right() -> None:
    # both peaked (same entropy), but the non-members are peaked on the wrong class
    logits = np.array([[8.0, 0.0, 0.0]] * 5)
    members = signals_from_logits(logits, np.zeros(5, dtype=np.int64))
    nonmembers = signals_from_logits(logits, np.ones(5, dtype=np.int64))
    assert run_attack("entropy", members, nonmembers).auc == 0.5
    assert run_attack("modified_entropy", members, nonmembers).auc == 1.0


def test_run_attacks_defaults_to_all_in_registration_order() -> None:
    results = run_attacks(MEMBERS, NONMEMBERS)
    assert tuple(r.name for r in results) == tuple(ATTACKS.names())
    assert [r.name for r in run_attacks(MEMBERS, NONMEMBERS, names=["entropy"])] == ["entropy"]


def test_unknown_attack_lists_the_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="valid names: loss, confidence"):
        run_attack("lira-online", MEMBERS, NONMEMBERS)


def test_empty_groups_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="got 0 and 60"):
        run_attack("loss", MEMBERS.subset(np.zeros(len(MEMBERS), dtype=bool)), NONMEMBERS)


def test_signals_of_different_models_are_rejected() -> None:
    with pytest.raises(ValueError, match="same model"):
        run_attack("loss", _confident(np.ones(3), k=4), NONMEMBERS)
