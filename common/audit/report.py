"""The audit of one model: the DESIGN metrics (ua, ra, ta, mia_efficacy, mia_auc, TPRs).

A report is only meaningful next to the same report for the model retrained
from scratch without the forget set; ``avg_gap`` condenses that comparison the
way the SalUn tables do.

Which non-members the attacks compare the forget set with matters: an attack
should find the forget samples indistinguishable from unseen samples *of the
same classes*. For random forgetting these are all test samples; for class
forgetting only the test samples of the forgotten classes, so that a retrained
model scores an AUC near 0.5 instead of being flagged for not recognising a
class it never saw.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fedunlearn.common.audit.attacks import AttackResult, attack_scores, run_attacks
from fedunlearn.common.audit.calibrated import CALIBRATED_ATTACKS, Calibration
from fedunlearn.common.audit.efficacy import mia_efficacy
from fedunlearn.common.audit.roc import roc_auc, roc_curve, tpr_at_fpr
from fedunlearn.common.audit.signals import Logits, Signals, logits_signals
from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import ConfigError

__all__ = ["GAP_METRICS", "PRIMARY_ATTACK", "AuditReport", "ReferenceStatistics", "audit_from_signals", "audit_model",
           "avg_gap"]

GAP_METRICS = ("ua", "ra", "ta", "mia_efficacy")

# The attack whose numbers become the headline mia_auc / tpr_* metrics.
PRIMARY_ATTACK = "loss"


@dataclass(frozen=True, eq=False)
class AuditReport:
    """Percentages (0-100) for ua, ra, ta, mia_efficacy and the TPRs; AUC as a fraction.

    attacks: every audit attack's result, forget samples vs same-class test samples (the population
             attacks, then the reference-model ones when the audit had references)
    roc:     (fpr, tpr) of the primary (loss) attack, each (T,), for plotting
    """

    ua: float
    ra: float
    ta: float
    mia_efficacy: float
    mia_auc: float
    tpr_at_1pct_fpr: float
    tpr_at_01pct_fpr: float
    attacks: tuple[AttackResult, ...]
    roc: tuple[np.ndarray, np.ndarray]

    def to_dict(self) -> dict[str, Any]:
        """Plain floats for report.json: the metrics and one entry per attack (no ROC points)."""
        metrics: dict[str, Any] = {
            name: float(getattr(self, name))
            for name in ("ua", "ra", "ta", "mia_efficacy", "mia_auc", "tpr_at_1pct_fpr", "tpr_at_01pct_fpr")
        }
        metrics["attacks"] = {
            result.name: {key: float(value) for key, value in asdict(result).items() if key != "name"}
            for result in self.attacks
        }
        return metrics


@dataclass(frozen=True, eq=False)
class ReferenceStatistics:
    """Reference models' view of the audited sets, columns in the sets' own order.

    forget: (K, M) statistics on the forget set; test: (K, T) on the whole test set (the audit picks the
    non-member columns itself, as it picks the non-members).
    """

    forget: Calibration
    test: Calibration


def _class_mask(labels: np.ndarray, classes: tuple[int, ...] | np.ndarray) -> np.ndarray:
    return np.isin(labels, np.asarray(classes, dtype=np.int64))


def _check_inputs(
    retain: Signals, forget: Signals, test: Signals, forgotten_classes: tuple[int, ...],
    references: ReferenceStatistics | None,
) -> None:
    num_classes = {retain.num_classes, forget.num_classes, test.num_classes}
    if len(num_classes) != 1:
        raise ValueError(
            f"retain, forget and test signals disagree on the number of classes: "
            f"{retain.num_classes}, {forget.num_classes}, {test.num_classes}; use one model for all three"
        )
    if len(forget) == 0:
        raise ConfigError("the forget set is empty: there is nothing to audit")
    bad = [c for c in forgotten_classes if not 0 <= c < forget.num_classes]
    if bad:
        raise ConfigError(f"forgotten_classes must lie in [0, {forget.num_classes}), got {bad}")
    if references is not None and (len(references.forget), len(references.test)) != (len(forget), len(test)):
        raise ValueError(
            f"reference statistics cover {len(references.forget)} forget and {len(references.test)} test "
            f"samples, the audit has {len(forget)} and {len(test)}; compute them on the audited sets"
        )


def _graded(name: str, member_scores: np.ndarray, nonmember_scores: np.ndarray) -> AttackResult:
    return AttackResult(
        name=name,
        auc=roc_auc(member_scores, nonmember_scores),
        tpr_at_1pct_fpr=100.0 * tpr_at_fpr(member_scores, nonmember_scores, 0.01),
        tpr_at_01pct_fpr=100.0 * tpr_at_fpr(member_scores, nonmember_scores, 0.001),
    )


def _calibrated_attacks(members: Signals, member_refs: Calibration, nonmembers: Signals,
                        nonmember_refs: Calibration) -> tuple[AttackResult, ...]:
    """Every reference-model attack, in registration order, on the same members and non-members."""
    return tuple(
        _graded(name, *CALIBRATED_ATTACKS.get(name)(members.logit_confidence, member_refs,
                                                    nonmembers.logit_confidence, nonmember_refs))
        for name in CALIBRATED_ATTACKS.names()
    )


def audit_from_signals(
    *,
    retain: Signals,
    forget: Signals,
    test: Signals,
    forgotten_classes: tuple[int, ...] = (),
    seed: int = 0,
    references: ReferenceStatistics | None = None,
) -> AuditReport:
    """Every audit metric from one model's signals on the three sets.

    ``forgotten_classes`` (class forgetting) removes those classes from the
    test set used for ta and MIA-Efficacy. The attacks' non-members are the
    test samples of the classes present in the forget set. With ``references``
    (their statistics on the forget and test sets) LiRA and RMIA run as well.
    """
    _check_inputs(retain, forget, test, forgotten_classes, references)
    remaining_test = test.subset(~_class_mask(test.labels, forgotten_classes))
    forget_classes = np.unique(forget.labels)
    is_nonmember = _class_mask(test.labels, forget_classes)
    nonmembers = test.subset(is_nonmember)
    if len(nonmembers) == 0:
        raise ConfigError(
            f"the test set has no samples of the forget set's classes {forget_classes.tolist()}; "
            "the attacks have no non-members to compare with"
        )
    attacks = run_attacks(forget, nonmembers)
    if references is not None:
        attacks += _calibrated_attacks(forget, references.forget, nonmembers, references.test.subset(is_nonmember))
    primary = next(result for result in attacks if result.name == PRIMARY_ATTACK)
    return AuditReport(
        ua=100.0 - forget.accuracy,
        ra=retain.accuracy,
        ta=remaining_test.accuracy,
        mia_efficacy=mia_efficacy(retain, remaining_test, forget, seed=seed),
        mia_auc=primary.auc,
        tpr_at_1pct_fpr=primary.tpr_at_1pct_fpr,
        tpr_at_01pct_fpr=primary.tpr_at_01pct_fpr,
        attacks=attacks,
        roc=roc_curve(attack_scores(PRIMARY_ATTACK, forget), attack_scores(PRIMARY_ATTACK, nonmembers)),
    )


def audit_model(
    logits_of: Logits,
    *,
    retain: LabeledData,
    forget: LabeledData,
    test: LabeledData,
    forgotten_classes: tuple[int, ...] = (),
    seed: int = 0,
    references: ReferenceStatistics | None = None,
) -> AuditReport:
    """One pass per set of the model given as inputs -> logits (``torch_logits`` or an ONNX Runtime
    session), then ``audit_from_signals``."""
    return audit_from_signals(
        retain=logits_signals(logits_of, retain),
        forget=logits_signals(logits_of, forget),
        test=logits_signals(logits_of, test),
        forgotten_classes=forgotten_classes,
        seed=seed,
        references=references,
    )


def avg_gap(report: AuditReport, retrain: AuditReport) -> float:
    """Mean absolute difference to the retrained model over ua, ra, ta and mia_efficacy (points)."""
    return float(np.mean([abs(getattr(report, m) - getattr(retrain, m)) for m in GAP_METRICS]))
