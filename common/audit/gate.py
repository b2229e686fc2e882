"""The federation's leakage gate: pool the requesting clients' audits, decide publish or not.

Each requesting client audits the candidate model on its own forget set against
its own hold-out (non-members of the same classes) and sends only numbers: per
attack an AUC with its DeLong variance, forget and reference accuracy, and set
sizes.

What a forget set is compared with is what a model retrained without it would
show (``audit_sets``). Sample forgetting: the hold-out, for the AUCs and the
accuracy alike. Class forgetting: the AUCs compare the forget samples with
hold-out samples *of the same class* (to a model that never saw the class both
are unseen images of it, so a retrained model scores 0.5 by symmetry), and
forget accuracy is compared with how often the model answers the class for
other classes' samples ("never learned it": about 0%). Comparing the AUCs with
that never-learned set instead asks more than retraining gives: on digits a
model retrained without class 3 still tells 3s from relabelled other digits
with AUC 0.91, so nothing could pass.

The server pools the audits weighted by forget-set size (variances of
independent audits add, with the squared weights) and passes the model when,
for every audit attack, the forget set cannot be told from non-members beyond
a tolerance, forget accuracy sits within a band of hold-out accuracy, and test
accuracy did not drop more than allowed. Small sets make AUCs noisy, so each
tolerance is the larger of the configured one and the half-width of the
pooled confidence interval: the gate refuses only what the evidence shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import norm

from common.audit.attacks import ATTACKS, attack_scores
from common.audit.roc import auc_variance, roc_auc
from common.audit.signals import Logits, signals_from_logits, torch_logits
from common.data.tensors import LabeledData
from common.errors import ConfigError, DataError
from common.training import top1_accuracy
from common.unlearning.base import Granularity
from common.unlearning.reference import build_reference

__all__ = ["AuditSets", "GateConfig", "GateResult", "LocalAudit", "Logits", "PooledAudit", "audit_sets",
           "leakage_gate", "local_leakage_audit", "pool_audits", "torch_logits"]

PRIMARY = "loss"


@dataclass(frozen=True)
class LocalAudit:
    """One client's audit of one model; numbers only, nothing that identifies a sample.

    aucs / variances: attack name -> AUC (0-1) and its DeLong variance.
    Accuracies are percentages.
    """

    forget_size: int
    holdout_size: int
    forget_accuracy: float
    holdout_accuracy: float  # accuracy on the accuracy reference (the hold-out unless told otherwise)
    aucs: dict[str, float]
    variances: dict[str, float]


@dataclass(frozen=True)
class AuditSets:
    """nonmembers: what the AUCs compare the forget set with; accuracy_reference: what forget accuracy
    is compared with. Either may be empty when a client holds no such samples."""

    nonmembers: LabeledData
    accuracy_reference: LabeledData


def audit_sets(holdout: LabeledData, granularity: Granularity, forgotten_classes: tuple[int, ...] = (), *,
               seed: int = 0) -> AuditSets:
    """The comparison sets a retrained model would pass (module docstring)."""
    if granularity == "sample":
        return AuditSets(holdout, holdout)
    same_class = holdout.subset(torch.isin(holdout.y, torch.tensor(forgotten_classes, dtype=torch.int64)))
    return AuditSets(same_class, build_reference(holdout, granularity, forgotten_classes, seed=seed))


def local_leakage_audit(
    logits_of: Logits, forget: LabeledData, nonmembers: LabeledData, *,
    accuracy_reference: LabeledData | None = None,
) -> LocalAudit:
    """Every audit attack, forget samples (members) vs this client's non-members; forget accuracy
    next to the accuracy on ``accuracy_reference`` (default: the non-members)."""
    if len(forget) == 0 or len(nonmembers) == 0:
        raise DataError(f"an audit needs forget samples and non-members, got {len(forget)} and {len(nonmembers)}")
    reference = nonmembers if accuracy_reference is None else accuracy_reference
    if len(reference) == 0:
        raise DataError("an audit needs samples to compare forget accuracy with, got none")
    forget_logits, other_logits = logits_of(forget.x), logits_of(nonmembers.x)
    members, others = signals_from_logits(forget_logits, forget.y), signals_from_logits(other_logits, nonmembers.y)
    aucs, variances = {}, {}
    for name in ATTACKS.names():
        m, o = attack_scores(name, members), attack_scores(name, others)
        aucs[name], variances[name] = roc_auc(m, o), auc_variance(m, o)
    reference_logits = other_logits if reference is nonmembers else logits_of(reference.x)
    return LocalAudit(
        forget_size=len(forget), holdout_size=len(nonmembers),
        forget_accuracy=top1_accuracy(torch.as_tensor(forget_logits), forget.y),
        holdout_accuracy=top1_accuracy(torch.as_tensor(reference_logits), reference.y),
        aucs=aucs, variances=variances,
    )


@dataclass(frozen=True)
class PooledAudit:
    """Audits of several clients combined, weighted by forget-set size."""

    forget_size: int
    forget_accuracy: float
    holdout_accuracy: float
    accuracy_se: float  # standard error of (forget - hold-out accuracy), percentage points
    aucs: dict[str, float]
    auc_se: dict[str, float]


def pool_audits(audits: Sequence[LocalAudit]) -> PooledAudit:
    if not audits:
        raise DataError("no audits to pool: no requesting client answered")
    weights = np.array([a.forget_size for a in audits], dtype=np.float64)
    weights /= weights.sum()

    def mean(values: Sequence[float]) -> float:
        return float(np.dot(weights, values))

    def se(variances: Sequence[float]) -> float:
        return math.sqrt(float(np.dot(weights**2, variances)))

    forget_acc, holdout_acc = mean([a.forget_accuracy for a in audits]), mean([a.holdout_accuracy for a in audits])
    accuracy_variances = [
        _proportion_variance(a.forget_accuracy, a.forget_size) + _proportion_variance(a.holdout_accuracy,
                                                                                       a.holdout_size)
        for a in audits
    ]
    names = sorted(set.intersection(*(set(a.aucs) for a in audits)))
    return PooledAudit(
        forget_size=int(sum(a.forget_size for a in audits)),
        forget_accuracy=forget_acc, holdout_accuracy=holdout_acc, accuracy_se=se(accuracy_variances),
        aucs={n: mean([a.aucs[n] for a in audits]) for n in names},
        auc_se={n: se([a.variances[n] for a in audits]) for n in names},
    )


def _proportion_variance(percent: float, n: int) -> float:
    """Binomial variance of a percentage; a floor of one sample's worth keeps 0% / 100% honest."""
    p = min(max(percent / 100.0, 0.5 / n), 1.0 - 0.5 / n)
    return 1e4 * p * (1.0 - p) / n


@dataclass(frozen=True)
class GateConfig:
    """auc_tolerance: allowed |AUC - 0.5|; accuracy_band: allowed |forget - hold-out accuracy|
    (points); max_test_drop: allowed test-accuracy loss (points); level: confidence of the intervals."""

    auc_tolerance: float = 0.03
    accuracy_band: float = 2.0
    max_test_drop: float = 1.5
    level: float = 0.95

    def __post_init__(self) -> None:
        for name in ("auc_tolerance", "accuracy_band", "max_test_drop"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"[gate].{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.level < 1:
            raise ConfigError(f"[gate].level must be in (0, 1), got {self.level}")


@dataclass(frozen=True)
class GateResult:
    passed: bool
    forget_auc: float  # pooled AUC of the primary (loss) attack
    ci: tuple[float, float]  # its confidence interval
    tolerance: float  # the AUC tolerance applied to the primary attack
    worst_attack: str
    forget_accuracy: float
    holdout_accuracy: float
    test_drop: float
    reasons: tuple[str, ...] = field(default=())


def leakage_gate(pooled: PooledAudit, test_drop: float, config: GateConfig) -> GateResult:
    """Publish only if no attack, the accuracy gap, or the test-accuracy drop says otherwise."""
    z = float(norm.ppf(0.5 + config.level / 2.0))
    reasons = []
    worst, worst_excess = PRIMARY, -math.inf
    for name, auc in pooled.aucs.items():
        tolerance = max(config.auc_tolerance, z * pooled.auc_se[name])
        excess = abs(auc - 0.5) - tolerance
        if excess > worst_excess:
            worst, worst_excess = name, excess
        if excess > 0:
            reasons.append(f"{name} attack AUC {auc:.3f} is more than {tolerance:.3f} from 0.5")
    band = max(config.accuracy_band, z * pooled.accuracy_se)
    gap = pooled.forget_accuracy - pooled.holdout_accuracy
    if abs(gap) > band:
        reasons.append(f"forget accuracy {pooled.forget_accuracy:.1f}% is {gap:+.1f} points from hold-out "
                       f"accuracy {pooled.holdout_accuracy:.1f}% (band {band:.1f})")
    if test_drop > config.max_test_drop:
        reasons.append(f"test accuracy dropped {test_drop:.2f} points (allowed {config.max_test_drop})")
    auc, se = pooled.aucs[PRIMARY], pooled.auc_se[PRIMARY]
    return GateResult(
        passed=not reasons, forget_auc=auc, ci=(max(0.0, auc - z * se), min(1.0, auc + z * se)),
        tolerance=max(config.auc_tolerance, z * se), worst_attack=worst,
        forget_accuracy=pooled.forget_accuracy, holdout_accuracy=pooled.holdout_accuracy,
        test_drop=test_drop, reasons=tuple(reasons),
    )
