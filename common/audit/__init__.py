"""Membership-inference audit suite: how well a model has forgotten, graded from the outside.

One model pass gives ``Signals``; every attack, ROC statistic and report metric
is a numpy function of them. Separate on purpose from the leakage
approximators used inside the unlearning loss.
"""

from __future__ import annotations

from fedunlearn.common.audit.attacks import ATTACKS, AttackFn, AttackResult, attack_scores, run_attack, run_attacks
from fedunlearn.common.audit.efficacy import DEFAULT_MAX_TRAIN, mia_efficacy
from fedunlearn.common.audit.report import (
    GAP_METRICS,
    PRIMARY_ATTACK,
    AuditReport,
    audit_from_signals,
    audit_model,
    avg_gap,
)
from fedunlearn.common.audit.roc import CIMethod, auc_confidence_interval, auc_variance, roc_auc, roc_curve, tpr_at_fpr
from fedunlearn.common.audit.signals import Signals, compute_signals, signals_from_logits

__all__ = [
    "ATTACKS",
    "DEFAULT_MAX_TRAIN",
    "GAP_METRICS",
    "PRIMARY_ATTACK",
    "AttackFn",
    "AttackResult",
    "AuditReport",
    "CIMethod",
    "Signals",
    "attack_scores",
    "auc_confidence_interval",
    "auc_variance",
    "audit_from_signals",
    "audit_model",
    "avg_gap",
    "compute_signals",
    "mia_efficacy",
    "roc_auc",
    "roc_curve",
    "run_attack",
    "run_attacks",
    "signals_from_logits",
    "tpr_at_fpr",
]
