"""ReMI: unlearning guided by membership inference (DESIGN section 1).

Per step, with a retain batch (x_r, y_r), a forget batch x_f and a reference
(non-member) batch x_o:

    L = CE(f(x_r), y_r) + lambda_mia * L_leak(f, x_f, x_o) + lambda_kl * KL(N_f || N_o)
        [+ lambda_anchor * mean((f(x) - f_0(x))^2) over x in x_r and x_o]
        [+ lambda_target * Huber(max(0, s_f - e_f))]

where N_f, N_o are Gaussians fitted to the membership statistic
log p_y - log(1 - p_y) of the forget and reference batches, and f_0 is the
model before unlearning. The anchor term matters where the model memorised
its training set: the retain loss is then about zero and holds nothing in
place, and the leakage term's target (the reference batch, which it does not
differentiate) sinks with the forget set, so forgetting spread to unseen
samples and cost test accuracy; keeping retain and reference outputs where
they were leaves the change to the forget set. It holds logits, not
probabilities: a sample the model is sure of barely moves in probability while
its logit confidence, what the per-example attacks and U-LiRA read, moves a lot,
and ReMI moved unseen samples' confidence as far as the forget set's
(docs/method.md). f_0's logits are computed once per sample, before the first
step. The target term pulls each
forget sample's statistic s_f down to e_f, what reference models that never saw
it make of it (LiRA's and RMIA's per-example view): matching the forget set's
distribution as a whole lets easy samples stay high while hard ones fall, and
the per-example attacks still see the easy ones. Where the task
knows what reference models that never saw a sample make of it
(``UnlearningTask.expected_confidence``), the statistic is the excess over
that: a sample the model finds easy because it is easy no longer looks
remembered, and one it still remembers stands out even if it is hard (the
per-example calibration of LiRA, used here on ReMI's own half of the
hold-out, never on the gate's sealed half). The goal is
indistinguishability, not maximal forgetting: every ``check_every`` steps a
local audit compares the forget set with the reference set and the method
stops as soon as they match. If it passes them (forget samples looking less
like members than non-members) or hurts retain/hold-out accuracy, it goes back
to the best checkpoint with a smaller step; at the budget it returns the best
checkpoint seen.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn import functional as F

from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import ConfigError
from fedunlearn.common.models import Classifier
from fedunlearn.common.stem_features import stem_features
from fedunlearn.common.training import OptimizerName, batched_forward, check_finite, make_optimizer
from fedunlearn.common.unlearning.base import Outcome, TracePoint, UnlearningTask, register_method
from fedunlearn.common.unlearning.leakage import (
    LEAKAGE,
    LeakageApproximator,
    Outputs,
    forward_outputs,
    gaussian_kl,
    membership_statistic,
)
from fedunlearn.common.unlearning.stopping import (
    AuditSets,
    StoppingRule,
    StopTolerances,
    expected_of,
    local_audit,
)

__all__ = ["RemiParams"]


@dataclass(frozen=True)
class RemiParams(StopTolerances):
    """Hyper-parameters; the stopping tolerances come from ``StopTolerances`` (``stopping.py``)."""

    approximator: str = "shadow"
    scope: Literal["top", "all"] = "top"
    optimizer: OptimizerName = "adam"
    lambda_mia: float = 1.0
    lambda_kl: float = 0.1
    lambda_anchor: float = 0.0
    lambda_target: float = 0.0
    lr: float = 2e-4
    # a retain batch of 256: at 128 (a cheaper step) ReMI kept a point less retain accuracy on the 5-seed
    # Fashion-MNIST bench (95.7 against 96.7) for little time saved (docs/method.md)
    batch_size: int = 256
    forget_batch_size: int = 64
    max_steps: int = 400
    check_every: int = 20
    refit_every: int = 5
    retain_pool: int = 20000
    # stop after this many audits without a new best point (0: run to max_steps). Small forget sets
    # sit in their own noise; past a few stalled checks more steps only cost time.
    patience: int = 0
    # measure membership against the references' expectation where the task has one (module docstring)
    calibrated: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.approximator not in LEAKAGE:
            LEAKAGE.get(self.approximator)  # raises with the valid names
        for name in ("lambda_mia", "lambda_kl", "lambda_anchor", "lambda_target"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be >= 0, got {value}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.scope not in ("top", "all"):
            raise ConfigError(f"scope must be 'top' or 'all', got {self.scope!r}")
        for name in ("batch_size", "forget_batch_size", "max_steps", "check_every", "refit_every",
                     "retain_pool"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.patience < 0:
            raise ConfigError(f"patience must be >= 0 audits, got {self.patience}")


PROGRESS = 0.95  # a check that closes less than 5% of the distance counts as a stall
MAX_LR_GROWTH = 16.0


@dataclass(frozen=True)
class _Objective:
    """ReMI's loss, given what stays fixed for a run: the leakage approximator, the weights and whether
    the task knows what reference models expect of each sample (the target term needs that)."""

    approximator: LeakageApproximator
    params: RemiParams
    device: torch.device
    per_example: bool

    def loss(self, model: Classifier, batches: tuple[LabeledData, ...], expected: tuple[torch.Tensor, torch.Tensor],
             anchor: torch.Tensor | None) -> torch.Tensor:
        """One forward pass over (retain +) forget + reference; the loss terms share it.

        ``batches`` is (forget, reference) or (retain, forget, reference): a client that
        leaves the federation has no retain data, and its utility comes from the others.
        ``expected``: the references' expected statistic of the forget and reference batches.
        ``anchor``: the model's logits before unlearning of every batch but the forget batch, in
        order (None: the anchor term is off).
        """
        params, device = self.params, self.device
        xs, ys = zip(*((batch.x.to(device), batch.y.to(device)) for batch in batches), strict=True)
        sizes = [len(y) for y in ys]
        outputs = forward_outputs(model, torch.cat(xs), torch.cat(ys))
        parts = [Outputs(e, z, y) for e, z, y in zip(outputs.embeddings.split(sizes), outputs.logits.split(sizes),
                                                     ys, strict=True)]
        forget, reference = parts[-2], parts[-1].detach()
        excess = membership_statistic(forget.logits, forget.labels) - expected[0].to(device)
        loss = F.cross_entropy(parts[0].logits, parts[0].labels) if len(parts) == 3 else forget.logits.sum() * 0.0
        if params.lambda_mia > 0:
            loss = loss + params.lambda_mia * self.approximator.leakage(forget, reference)
        if params.lambda_kl > 0:
            loss = loss + params.lambda_kl * gaussian_kl(
                excess, membership_statistic(reference.logits, reference.labels) - expected[1].to(device))
        if params.lambda_target > 0 and self.per_example:
            loss = loss + params.lambda_target * F.smooth_l1_loss(F.relu(excess), torch.zeros_like(excess))
        if anchor is not None:
            kept = torch.cat([part.logits for i, part in enumerate(parts) if i != len(parts) - 2])
            loss = loss + params.lambda_anchor * F.mse_loss(kept, anchor.to(device))
        return loss


def _scale_lr(optimizer: torch.optim.Optimizer, factor: float, *, cap: float = math.inf) -> None:
    for group in optimizer.param_groups:
        group["lr"] = min(group["lr"] * factor, cap)


@dataclass(frozen=True)
class _Workspace:
    """The network ReMI updates and the data it feeds it.

    scope "top": the stem is frozen and run once over the data; steps and
    audits then only run neck + head on the cached stem features (the view
    shares parameters with the full model, so the model is updated in place).
    scope "all": the whole network on raw inputs.
    """

    net: Classifier
    retain: LabeledData
    forget: LabeledData
    reference: LabeledData
    utility: LabeledData
    # the anchor term's targets: net's logits before unlearning of every retain and reference sample
    anchor: tuple[torch.Tensor, torch.Tensor] | None

    @classmethod
    def build(cls, model: Classifier, task: UnlearningTask, params: RemiParams,
              generator: torch.Generator) -> _Workspace:
        retain = task.retain
        if len(retain) > params.retain_pool:
            retain = retain.subset(torch.randperm(len(retain), generator=generator)[: params.retain_pool])
        sets = [retain, task.forget, task.reference, task.utility_set]
        net = model
        if params.scope == "top":
            model.stem.requires_grad_(False)
            # one stem pass per distinct set (for sample forgetting the utility set is the reference); features
            # stay on the device (they are re-read every step), labels on the CPU beside the audit's logits
            cache = {id(data): stem_features(model, data, task.device, keep_on_device=True) for data in sets}
            net, sets = model.top(), [cache[id(data)] for data in sets]
        retain, forget, reference, utility = sets
        anchor = None
        if params.lambda_anchor > 0:
            anchor = (batched_forward(net, retain.x, device=task.device, keep_on_device=True),
                      batched_forward(net, reference.x, device=task.device, keep_on_device=True))
        return cls(net, retain, forget, reference, utility, anchor)

    def draw(self, params: RemiParams,
             generator: torch.Generator) -> tuple[tuple[LabeledData, ...], torch.Tensor | None]:
        """One step's (retain,) forget and reference batches, drawn with replacement, and the anchor's
        targets for the retain and reference rows (None where the anchor is off)."""
        # (set, batch size, its row in ``anchor``: None for the forget set, which the anchor leaves free)
        sources: list[tuple[LabeledData, int, int | None]] = (
            [(self.retain, params.batch_size, 0)] if len(self.retain) else [])
        sources += [(self.forget, params.forget_batch_size, None), (self.reference, params.forget_batch_size, 1)]
        batches, targets = [], []
        for data, size, anchored in sources:
            pick = torch.randint(0, len(data), (size,), generator=generator)
            batches.append(data.subset(pick))
            if self.anchor is not None and anchored is not None:
                targets.append(self.anchor[anchored][pick])
        return tuple(batches), torch.cat(targets) if targets else None

    def audit_sets(self, generator: torch.Generator, expected: Mapping[int, float] | None) -> AuditSets:
        return AuditSets.drawn(self.forget, self.reference, self.retain, self.utility, generator, expected)


@dataclass
class _Progress:
    """The best point so far and the step-size control, decided at each audit."""

    rule: StoppingRule
    best: TracePoint
    best_state: dict[str, torch.Tensor]
    checks_since_best: int = 0

    def review(self, model: Classifier, optimizer: torch.optim.Optimizer, point: TracePoint,
               previous: TracePoint, params: RemiParams) -> None:
        rule = self.rule
        self.checks_since_best += 1
        if rule.overshot(point) or rule.accuracy_drop(point) > 2:
            # went too far or clearly hurt the task: back to the best point, smaller steps
            model.load_state_dict(self.best_state)
            _scale_lr(optimizer, 0.5)
            return
        if rule.distance(point) > PROGRESS * rule.distance(previous):
            _scale_lr(optimizer, 1.5, cap=params.lr * MAX_LR_GROWTH)  # stalled: larger steps
        if rule.distance(point) < rule.distance(self.best):
            self.best, self.best_state = point, copy.deepcopy(model.state_dict())
            self.checks_since_best = 0

    def stalled(self, patience: int) -> bool:
        return patience > 0 and self.checks_since_best >= patience


def _unlearn(model: Classifier, task: UnlearningTask, params: RemiParams) -> Outcome:
    generator = torch.Generator().manual_seed(task.seed)
    work = _Workspace.build(model, task, params, generator)
    expected = task.expected_confidence if params.calibrated else None
    sets, net = work.audit_sets(generator, expected), work.net
    approximator = LEAKAGE.get(params.approximator)(task.spec.num_classes, task.seed)
    trainable = [p for p in net.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, params.optimizer, params.lr, momentum=0.0)
    objective = _Objective(approximator, params, task.device, per_example=expected is not None)
    start = local_audit(net, sets, 0)
    progress = _Progress(StoppingRule(params, start, sets), start, copy.deepcopy(model.state_dict()))
    trace = [start]
    if progress.rule.distance(start) <= 1:
        return Outcome(model, 0, "already indistinguishable", tuple(trace))
    for step in range(1, params.max_steps + 1):
        if (step - 1) % (params.check_every * params.refit_every) == 0 and params.lambda_mia > 0:
            approximator.fit(net, sets.retain if len(sets.retain) else sets.forget, work.reference)
        net.train()
        batches, anchor = work.draw(params, generator)
        loss = objective.loss(net, batches, (expected_of(batches[-2], expected), expected_of(batches[-1], expected)),
                              anchor)
        check_finite(loss, "ReMI loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % params.check_every == 0:
            trace.append(local_audit(net, sets, step))
            if progress.rule.distance(trace[-1]) <= 1:
                return Outcome(model, step, "indistinguishable", tuple(trace))
            progress.review(model, optimizer, trace[-1], trace[-2], params)
            if progress.stalled(params.patience):
                model.load_state_dict(progress.best_state)
                return Outcome(model, step, f"stalled; best at step {progress.best.step}", tuple(trace))
    model.load_state_dict(progress.best_state)
    return Outcome(model, params.max_steps, f"budget; best at step {progress.best.step}", tuple(trace))


@register_method("remi", RemiParams, needs_retain=False)
def remi(model: Classifier, task: UnlearningTask, params: RemiParams) -> Outcome:
    """Run the combined loss until the local audit says forget ~ reference, or the budget ends."""
    stem = [p for p in model.stem.parameters() if p.requires_grad]
    try:
        return _unlearn(model, task, params)
    finally:
        for parameter in stem:  # scope "top" froze them; the returned model is trainable again
            parameter.requires_grad_(True)
