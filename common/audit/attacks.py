"""Threshold membership-inference attacks, graded by ROC.

Each attack maps ``Signals`` (N samples) to (N,) scores, higher meaning "more
likely a member". They need no shadow model, so they are cheap enough to run on
every audit and independent of whatever leakage approximator the unlearning
loss was optimised against (a model must never be graded only by its own
critic).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fedunlearn.common.audit.roc import roc_auc, tpr_at_fpr
from fedunlearn.common.audit.signals import Signals
from fedunlearn.common.errors import ConfigError
from fedunlearn.common.registry import Registry

__all__ = ["ATTACKS", "AttackFn", "AttackResult", "attack_scores", "run_attack", "run_attacks"]

AttackFn = Callable[[Signals], np.ndarray]

ATTACKS: Registry[AttackFn] = Registry("attack")


@ATTACKS.register("loss")
def _loss(signals: Signals) -> np.ndarray:
    """Members were fitted, so their cross-entropy is low (Yeom et al. 2018)."""
    return -signals.losses


@ATTACKS.register("confidence")
def _confidence(signals: Signals) -> np.ndarray:
    """Members get a high probability on their true label."""
    return signals.confidences


@ATTACKS.register("entropy")
def _entropy(signals: Signals) -> np.ndarray:
    """Members get peaked, low-entropy predictions (label-blind)."""
    return -signals.entropy


@ATTACKS.register("modified_entropy")
def _modified_entropy(signals: Signals) -> np.ndarray:
    """Low label-aware entropy (Song & Mittal 2021): confidently right, not confidently wrong."""
    return -signals.modified_entropy


@dataclass(frozen=True)
class AttackResult:
    """One attack's grade. AUC is a fraction (0-1); TPRs are percentages (0-100)."""

    name: str
    auc: float
    tpr_at_1pct_fpr: float
    tpr_at_01pct_fpr: float


def attack_scores(name: str, signals: Signals) -> np.ndarray:
    """(N,) membership scores of attack ``name``; unknown names list the valid ones."""
    return ATTACKS.get(name)(signals)


def run_attack(name: str, members: Signals, nonmembers: Signals) -> AttackResult:
    """Grade attack ``name`` on known members vs known non-members of one model."""
    if members.num_classes != nonmembers.num_classes:
        raise ValueError(
            f"members have {members.num_classes} classes but non-members {nonmembers.num_classes}: "
            "both must come from the same model"
        )
    if len(members) == 0 or len(nonmembers) == 0:
        raise ConfigError(
            f"attack {name!r} needs members and non-members, got {len(members)} and {len(nonmembers)}"
        )
    member_scores = attack_scores(name, members)
    nonmember_scores = attack_scores(name, nonmembers)
    return AttackResult(
        name=name,
        auc=roc_auc(member_scores, nonmember_scores),
        tpr_at_1pct_fpr=100.0 * tpr_at_fpr(member_scores, nonmember_scores, 0.01),
        tpr_at_01pct_fpr=100.0 * tpr_at_fpr(member_scores, nonmember_scores, 0.001),
    )


def run_attacks(
    members: Signals, nonmembers: Signals, names: Sequence[str] | None = None
) -> tuple[AttackResult, ...]:
    """Every registered attack (in registration order) or just ``names``."""
    chosen = ATTACKS.names() if names is None else list(names)
    return tuple(run_attack(name, members, nonmembers) for name in chosen)
