"""One client's membership audit of one model: its forget set against its sealed non-members.

The client runs every attack it can afford and sends only numbers (sizes,
accuracies, per attack an AUC and the TPR at 1% FPR); the server checks and
pools them (``common.audit.gate``). Population attacks need only the model;
reference-model attacks (LiRA, RMIA) also need the reference models'
statistics on the same samples (``Calibration``), which the client computed
once from references that never saw its data.

What a forget set is compared with is what a model retrained without it would
show (``comparison_sets``). Sample forgetting: the sealed hold-out, for the
AUCs and the accuracy alike. Class forgetting: the AUCs compare the forget
samples with sealed hold-out samples *of the same class* (to a model that
never saw the class both are unseen images of it, so a retrained model scores
0.5 by symmetry), joined by the unseen images of the class the server lends
(``common.audit.exemplars``), and forget accuracy is compared with how often
the model answers the class for other classes' samples ("never learned it":
about 0%).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedunlearn.common.audit.attacks import ATTACKS, attack_scores
from fedunlearn.common.audit.calibrated import CALIBRATED_ATTACKS, Calibration
from fedunlearn.common.audit.roc import roc_auc, tpr_at_fpr
from fedunlearn.common.audit.signals import Logits, Signals, signals_from_logits
from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import DataError
from fedunlearn.common.training import top1_accuracy
from fedunlearn.common.unlearning.base import Granularity
from fedunlearn.common.unlearning.reference import build_reference

__all__ = ["AttackFigures", "ComparisonSets", "LocalAudit", "comparison_sets", "local_leakage_audit"]


@dataclass(frozen=True)
class AttackFigures:
    """One attack on one audit: AUC (0-1) and TPR at 1% FPR (percent)."""

    auc: float
    tpr_at_1pct_fpr: float


@dataclass(frozen=True)
class LocalAudit:
    """One client's audit of one model; numbers only, nothing that identifies a sample.

    holdout_size: the non-members the AUCs compare with. Accuracies are percentages.
    """

    forget_size: int
    holdout_size: int
    forget_accuracy: float
    holdout_accuracy: float  # on the accuracy reference (the non-members unless told otherwise)
    attacks: dict[str, AttackFigures]


@dataclass(frozen=True)
class ComparisonSets:
    """nonmembers: what the AUCs compare the forget set with; accuracy_reference: what forget accuracy
    is compared with. Either may be empty when a client holds no such samples."""

    nonmembers: LabeledData
    accuracy_reference: LabeledData


def comparison_sets(sealed: LabeledData, granularity: Granularity, forgotten_classes: tuple[int, ...] = (), *,
                    seed: int = 0) -> ComparisonSets:
    """The comparison sets a retrained model would pass (module docstring), from the sealed hold-out."""
    if granularity == "sample":
        return ComparisonSets(sealed, sealed)
    same_class = sealed.where_classes(forgotten_classes, keep=True)
    return ComparisonSets(same_class, build_reference(sealed, granularity, forgotten_classes, seed=seed))


def _figures(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> AttackFigures:
    return AttackFigures(auc=roc_auc(member_scores, nonmember_scores),
                         tpr_at_1pct_fpr=100.0 * tpr_at_fpr(member_scores, nonmember_scores, 0.01))


def _calibrated(members: Signals, others: Signals,
                calibration: tuple[Calibration, Calibration]) -> dict[str, AttackFigures]:
    member_refs, other_refs = calibration
    return {name: _figures(*CALIBRATED_ATTACKS.get(name)(members.logit_confidence, member_refs,
                                                         others.logit_confidence, other_refs))
            for name in CALIBRATED_ATTACKS.names()}


def local_leakage_audit(
    logits_of: Logits, forget: LabeledData, nonmembers: LabeledData, *,
    accuracy_reference: LabeledData | None = None, calibration: tuple[Calibration, Calibration] | None = None,
) -> LocalAudit:
    """Every population attack (and, given the references' ``calibration`` of the forget set and the
    non-members, every reference-model attack), forget samples (members) vs non-members; forget
    accuracy next to the accuracy on ``accuracy_reference`` (default: the non-members)."""
    if len(forget) == 0 or len(nonmembers) == 0:
        raise DataError(f"an audit needs forget samples and non-members, got {len(forget)} and {len(nonmembers)}")
    reference = nonmembers if accuracy_reference is None else accuracy_reference
    if len(reference) == 0:
        raise DataError("an audit needs samples to compare forget accuracy with, got none")
    forget_logits, other_logits = logits_of(forget.x), logits_of(nonmembers.x)
    members, others = signals_from_logits(forget_logits, forget.y), signals_from_logits(other_logits, nonmembers.y)
    attacks = {name: _figures(attack_scores(name, members), attack_scores(name, others)) for name in ATTACKS.names()}
    if calibration is not None:
        attacks |= _calibrated(members, others, calibration)
    reference_logits = other_logits if reference is nonmembers else logits_of(reference.x)
    return LocalAudit(
        forget_size=len(forget), holdout_size=len(nonmembers),
        forget_accuracy=top1_accuracy(torch.as_tensor(forget_logits), forget.y),
        holdout_accuracy=top1_accuracy(torch.as_tensor(reference_logits), reference.y),
        attacks=attacks,
    )
