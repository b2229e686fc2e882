"""The local audit that tells an unlearning method to stop, shared by ReMI and the step baselines.

On capped samples of the task (forget, reference, retain, utility: data every method is given),
``local_audit`` measures how far the forget set is from looking like non-members, and
``StoppingRule`` says when that is close enough within the audit's own noise, or when a method went
too far. ReMI checks every ``check_every`` steps (``remi.py``); a baseline with ``early_stop`` checks
after every epoch (``EpochStop``) and, like ReMI, ends at the best point it saw. So in the bench either
method may stop early on the same evidence.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from fedunlearn.common.audit.roc import roc_auc
from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import ConfigError
from fedunlearn.common.models import Classifier
from fedunlearn.common.training import predict_logits, top1_accuracy
from fedunlearn.common.unlearning.base import TracePoint, UnlearningTask
from fedunlearn.common.unlearning.leakage import membership_statistic

__all__ = ["AUDIT_CAP", "AuditSets", "EpochStop", "StopTolerances", "StoppingRule", "expected_of",
           "local_audit"]

AUDIT_CAP = 1000


@dataclass(frozen=True)
class StopTolerances:
    """How close counts as indistinguishable: a method's hyper-parameters inherit these.

    Tolerances are at least noise_z standard errors of the local audit's own noise. In a
    federation the server's gate pools several clients' audits and sees smaller effects than
    one client can, so federated scenarios stop locally at a tighter noise_z.
    """

    auc_tolerance: float = 0.03
    accuracy_band: float = 1.0
    max_accuracy_drop: float = 1.0
    noise_z: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.auc_tolerance < 0.5:
            raise ConfigError(f"auc_tolerance must be in (0, 0.5), got {self.auc_tolerance}")
        if not (self.noise_z >= 0 and math.isfinite(self.noise_z)):
            raise ConfigError(f"noise_z must be >= 0, got {self.noise_z}")
        for name in ("accuracy_band", "max_accuracy_drop"):
            if not 0 < getattr(self, name) < 100:
                raise ConfigError(f"{name} must be in (0, 100) points, got {getattr(self, name)}")


def _capped(data: LabeledData, generator: torch.Generator) -> LabeledData:
    if len(data) <= AUDIT_CAP:
        return data
    return data.subset(torch.randperm(len(data), generator=generator)[:AUDIT_CAP])


@dataclass(frozen=True)
class AuditSets:
    """Fixed, capped samples the local audit looks at every ``check_every`` steps."""

    forget: LabeledData
    reference: LabeledData
    retain: LabeledData
    utility: LabeledData
    expected: Mapping[int, float] | None = None

    @classmethod
    def drawn(cls, forget: LabeledData, reference: LabeledData, retain: LabeledData, utility: LabeledData,
              generator: torch.Generator, expected: Mapping[int, float] | None) -> AuditSets:
        """Capped samples of each set. Where the utility set is the reference (sample forgetting) it gets
        the reference's sample, so that an audit scores those samples once, not twice."""
        forget, capped_reference, retain = (_capped(d, generator) for d in (forget, reference, retain))
        return cls(forget, capped_reference, retain,
                   capped_reference if utility is reference else _capped(utility, generator), expected=expected)

    def statistic(self, logits: torch.Tensor, data: LabeledData) -> torch.Tensor:
        """The membership statistic of ``data``, less what reference models expect of each sample."""
        return membership_statistic(logits, data.y) - expected_of(data, self.expected)


def expected_of(data: LabeledData, expected: Mapping[int, float] | None) -> torch.Tensor:
    """(N,) the references' expected statistic of each sample (0 where unknown: the raw statistic)."""
    if expected is None:
        return torch.zeros(len(data))
    return torch.tensor([expected.get(int(i), 0.0) for i in data.ids.tolist()], dtype=torch.float32)


def local_audit(model: Classifier, sets: AuditSets, step: int) -> TracePoint:
    """Forget vs reference: accuracies (percent) and the AUC of the membership statistic.

    This is the stopping signal; AUC 0.5 and equal accuracies mean the forget
    samples look like non-members. Retain accuracy guards utility.
    """
    device = next(model.parameters()).device
    forget_logits = predict_logits(model, sets.forget.x, device=device)
    reference_logits = predict_logits(model, sets.reference.x, device=device)
    utility_logits = (reference_logits if sets.utility is sets.reference
                      else predict_logits(model, sets.utility.x, device=device))
    forget_stat = sets.statistic(forget_logits, sets.forget).double().numpy()
    reference_stat = sets.statistic(reference_logits, sets.reference).double().numpy()
    return TracePoint(
        step=step,
        forget_accuracy=top1_accuracy(forget_logits, sets.forget.y),
        reference_accuracy=top1_accuracy(reference_logits, sets.reference.y),
        retain_accuracy=_accuracy_or_nan(model, sets.retain, device),
        utility_accuracy=top1_accuracy(utility_logits, sets.utility.y),
        forget_auc=float(roc_auc(np.nan_to_num(forget_stat), np.nan_to_num(reference_stat))),
    )


def _accuracy_or_nan(model: Classifier, data: LabeledData, device: torch.device) -> float:
    """Top-1 accuracy, or NaN for an empty set (a leaving client keeps no retain data)."""
    if len(data) == 0:
        return math.nan
    return top1_accuracy(predict_logits(model, data.x, device=device), data.y)


def _accuracy_noise(percent: float, *sizes: int) -> float:
    """Standard error (points) of a difference of accuracies measured on sets of ``sizes``."""
    p = min(max(percent / 100.0, 0.01), 0.99)
    return 100.0 * math.sqrt(p * (1 - p) * sum(1.0 / n for n in sizes))


@dataclass(frozen=True)
class StoppingRule:
    """When the forget set counts as indistinguishable, and when ReMI went too far.

    Each tolerance is the configured one or two standard errors of the audit
    itself, whichever is larger: with 60 forget samples one sample moves the
    accuracy by 1.7 points, and chasing noise would only overshoot.
    """

    params: StopTolerances
    start: TracePoint
    sets: AuditSets

    @property
    def auc_tolerance(self) -> float:
        n_f, n_o = len(self.sets.forget), len(self.sets.reference)
        null_se = math.sqrt((n_f + n_o + 1) / (12.0 * n_f * n_o))  # Mann-Whitney AUC under H0
        return max(self.params.auc_tolerance, self.params.noise_z * null_se)

    def accuracy_band(self, point: TracePoint) -> float:
        noise = _accuracy_noise(point.reference_accuracy, len(self.sets.forget), len(self.sets.reference))
        return max(self.params.accuracy_band, self.params.noise_z * noise)

    def accuracy_drop(self, point: TracePoint) -> float:
        """The larger loss of retain or hold-out accuracy since the start, in allowed drops."""
        ratios = [-math.inf]
        for before, after, n in (
            (self.start.retain_accuracy, point.retain_accuracy, len(self.sets.retain)),
            (self.start.utility_accuracy, point.utility_accuracy, len(self.sets.utility)),
        ):
            if n == 0:
                continue
            allowed = max(self.params.max_accuracy_drop, self.params.noise_z * _accuracy_noise(before, n, n))
            ratios.append((before - after) / allowed)
        return max(ratios)

    def distance(self, point: TracePoint) -> float:
        """Distance from indistinguishable in units of the tolerances (<= 1 means done).

        A loss of retain or hold-out accuracy beyond the allowed drop counts against
        the point too, so that wrecking the model never passes for forgetting.
        """
        auc_term = abs(point.forget_auc - 0.5) / self.auc_tolerance
        accuracy_term = abs(point.forget_accuracy - point.reference_accuracy) / self.accuracy_band(point)
        return max(auc_term, accuracy_term, self.accuracy_drop(point))

    def overshot(self, point: TracePoint) -> bool:
        """Forget samples now look *less* like members than non-members (Streisand effect)."""
        return (
            point.forget_accuracy < point.reference_accuracy - self.accuracy_band(point)
            or point.forget_auc < 0.5 - self.auc_tolerance
        )


class EpochStop:
    """The stopping rule for a method that goes epoch by epoch: called after each epoch, it audits the
    model and says stop once the forget set is within tolerance of the reference set; ``finish`` leaves
    the model at the best point seen, as ReMI does at its budget."""

    def __init__(self, model: Classifier, task: UnlearningTask, tolerances: StopTolerances) -> None:
        generator = torch.Generator().manual_seed(task.seed)
        self.model = model
        self.sets = AuditSets.drawn(task.forget, task.reference, task.retain, task.utility_set, generator,
                                    task.expected_confidence)
        start = local_audit(model, self.sets, 0)
        self.rule = StoppingRule(tolerances, start, self.sets)
        self.best, self.best_state, self.epochs = start, copy.deepcopy(model.state_dict()), 0

    @property
    def done(self) -> bool:
        """Whether the best point seen is within tolerance (before any epoch: nothing to do)."""
        return self.rule.distance(self.best) <= 1

    def __call__(self, epoch: int) -> bool:
        """After epoch ``epoch`` (from 0): audit, keep the best point; True once within tolerance."""
        self.epochs = epoch + 1
        point = local_audit(self.model, self.sets, self.epochs)
        if self.rule.distance(point) < self.rule.distance(self.best):
            self.best, self.best_state = point, copy.deepcopy(self.model.state_dict())
        return self.done

    def finish(self, budget: int) -> str:
        """Leave the model at the best point and say why the method ended (its ``stop_reason``)."""
        self.model.load_state_dict(self.best_state)
        if self.done:
            return f"indistinguishable after epoch {self.best.step}"
        return f"budget of {budget} epochs; best after epoch {self.best.step}"
