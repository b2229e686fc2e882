"""ReMI: unlearning guided by membership inference (DESIGN section 1).

Per step, with a retain batch (x_r, y_r), a forget batch x_f and a reference
(non-member) batch x_o:

    L = CE(f(x_r), y_r) + lambda_mia * L_leak(f, x_f, x_o) + lambda_kl * KL(N_f || N_o)

where N_f, N_o are Gaussians fitted to the membership statistic
log p_y - log(1 - p_y) of the forget and reference batches. The goal is
indistinguishability, not maximal forgetting: every ``check_every`` steps a
local audit compares the forget set with the reference set, the method stops
as soon as they match, and if it ever passes them (forget accuracy below the
reference's) it returns the best checkpoint seen instead of the current one.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from common.audit.roc import roc_auc
from common.data.tensors import LabeledData
from common.errors import ConfigError
from common.models import Classifier
from common.training import check_finite, predict_logits
from common.unlearning.base import Outcome, TracePoint, UnlearningTask, register_method
from common.unlearning.leakage import (
    LEAKAGE,
    LeakageApproximator,
    Outputs,
    forward_outputs,
    gaussian_kl,
    membership_statistic,
)

__all__ = ["RemiParams", "local_audit"]

AUDIT_CAP = 1000


@dataclass(frozen=True)
class RemiParams:
    """Hyper-parameters; defaults were tuned on Fashion-MNIST/cnn (see README)."""

    approximator: str = "shadow"
    lambda_mia: float = 1.0
    lambda_kl: float = 1.0
    lr: float = 5e-4
    batch_size: int = 128
    forget_batch_size: int = 64
    max_steps: int = 400
    check_every: int = 10
    refit_every: int = 5
    auc_tolerance: float = 0.03
    accuracy_band: float = 1.0

    def __post_init__(self) -> None:
        if self.approximator not in LEAKAGE:
            LEAKAGE.get(self.approximator)  # raises with the valid names
        for name in ("lambda_mia", "lambda_kl"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be >= 0, got {value}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        for name in ("batch_size", "forget_batch_size", "max_steps", "check_every", "refit_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.auc_tolerance < 0.5:
            raise ConfigError(f"auc_tolerance must be in (0, 0.5), got {self.auc_tolerance}")
        if not 0 < self.accuracy_band < 100:
            raise ConfigError(f"accuracy_band must be in (0, 100) points, got {self.accuracy_band}")


def _capped(data: LabeledData, generator: torch.Generator) -> LabeledData:
    if len(data) <= AUDIT_CAP:
        return data
    return data.subset(torch.randperm(len(data), generator=generator)[:AUDIT_CAP])


def local_audit(model: Classifier, forget: LabeledData, reference: LabeledData, step: int) -> TracePoint:
    """Forget vs reference: accuracies (percent) and the AUC of the membership statistic.

    This is the stopping signal; AUC 0.5 and equal accuracies mean the forget
    samples look like non-members.
    """
    device = next(model.parameters()).device
    forget_logits = predict_logits(model, forget.x, device=device)
    reference_logits = predict_logits(model, reference.x, device=device)
    forget_stat = membership_statistic(forget_logits, forget.y).double().numpy()
    reference_stat = membership_statistic(reference_logits, reference.y).double().numpy()
    return TracePoint(
        step=step,
        forget_accuracy=100.0 * float((forget_logits.argmax(1) == forget.y).float().mean()),
        reference_accuracy=100.0 * float((reference_logits.argmax(1) == reference.y).float().mean()),
        forget_auc=float(roc_auc(np.nan_to_num(forget_stat), np.nan_to_num(reference_stat))),
    )


def _distance(point: TracePoint, params: RemiParams) -> float:
    """How far from indistinguishable, in units of the tolerances (<= 1 on both = done)."""
    auc_term = abs(point.forget_auc - 0.5) / params.auc_tolerance
    accuracy_term = abs(point.forget_accuracy - point.reference_accuracy) / params.accuracy_band
    return max(auc_term, accuracy_term)


def _overshot(point: TracePoint, params: RemiParams) -> bool:
    """Forget samples now look *less* like members than non-members do (Streisand effect)."""
    return (
        point.forget_accuracy < point.reference_accuracy - params.accuracy_band
        or point.forget_auc < 0.5 - params.auc_tolerance
    )


def _remi_loss(
    model: Classifier, approximator: LeakageApproximator,
    batches: tuple[tuple[torch.Tensor, torch.Tensor], ...], params: RemiParams, device: torch.device,
) -> torch.Tensor:
    """One forward pass over retain + forget + reference; the three loss terms share it."""
    xs, ys = zip(*((x.to(device), y.to(device)) for x, y in batches), strict=True)
    sizes = [len(y) for y in ys]
    outputs = forward_outputs(model, torch.cat(xs), torch.cat(ys))
    retain, forget, reference = (
        Outputs(e, z, y)
        for e, z, y in zip(
            outputs.embeddings.split(sizes), outputs.logits.split(sizes), ys, strict=True
        )
    )
    reference = reference.detach()
    loss = F.cross_entropy(retain.logits, retain.labels)
    if params.lambda_mia > 0:
        loss = loss + params.lambda_mia * approximator.leakage(forget, reference)
    if params.lambda_kl > 0:
        loss = loss + params.lambda_kl * gaussian_kl(
            membership_statistic(forget.logits, forget.labels),
            membership_statistic(reference.logits, reference.labels),
        )
    return loss


@register_method("remi", RemiParams)
def remi(model: Classifier, task: UnlearningTask, params: RemiParams) -> Outcome:
    """Run the combined loss until the local audit says forget ~ reference, or the budget ends."""
    generator = torch.Generator().manual_seed(task.seed)
    forget_audit, reference_audit = _capped(task.forget, generator), _capped(task.reference, generator)
    approximator = LEAKAGE.get(params.approximator)(task.spec.num_classes, task.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
    best = local_audit(model, forget_audit, reference_audit, 0)
    trace, best_state = [best], copy.deepcopy(model.state_dict())
    if _distance(best, params) <= 1:
        return Outcome(model, 0, "already indistinguishable", tuple(trace))
    for step in range(1, params.max_steps + 1):
        if (step - 1) % (params.check_every * params.refit_every) == 0 and params.lambda_mia > 0:
            approximator.fit(model, task.retain, task.reference)
        model.train()
        batches = (
            task.retain.sample_batch(params.batch_size, generator),
            task.forget.sample_batch(params.forget_batch_size, generator),
            task.reference.sample_batch(params.forget_batch_size, generator),
        )
        loss = _remi_loss(model, approximator, batches, params, task.device)
        check_finite(loss, "ReMI loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % params.check_every:
            continue
        point = local_audit(model, forget_audit, reference_audit, step)
        trace.append(point)
        if _distance(point, params) <= 1:
            return Outcome(model, step, "indistinguishable", tuple(trace))
        if _distance(point, params) < _distance(best, params):
            best, best_state = point, copy.deepcopy(model.state_dict())
        if _overshot(point, params):
            model.load_state_dict(best_state)
            return Outcome(model, step, f"overshot; restored step {best.step}", tuple(trace))
    model.load_state_dict(best_state)
    return Outcome(model, params.max_steps, f"budget; best at step {best.step}", tuple(trace))
