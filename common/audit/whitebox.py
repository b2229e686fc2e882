"""White-box and deep-forgetting checks: does the model look like retrain inside, not only at its outputs?

The output attacks of ``attacks.py`` see logits only. A method can flatten those
while the features below still carry the forget set, so a little fine-tuning
brings it back. Each check here is read beside the original model and retrain
under the same call: a model that forgot should land near retrain.

- ``linear_probe``: can a linear classifier tell members from non-members by
  their stem or penultimate features?
- ``gradient_norm_attack``: do members still get the small per-sample
  gradients of fitted samples?
- ``relearn_epochs``: how many epochs of fine-tuning on a few samples bring a
  forgotten class back?
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from fedunlearn.common.audit.roc import roc_auc, tpr_at_fpr
from fedunlearn.common.data.tensors import LabeledData, concat
from fedunlearn.common.errors import ConfigError
from fedunlearn.common.models import Classifier
from fedunlearn.common.training import TrainConfig, accuracy, train

__all__ = [
    "MAX_STEM_FEATURES",
    "PROBE_FOLDS",
    "GradientAttackResult",
    "ProbeLayer",
    "ProbeResult",
    "RelearnResult",
    "gradient_norm_attack",
    "gradient_norms",
    "linear_probe",
    "relearn_epochs",
]

ProbeLayer = Literal["stem", "penultimate"]

# Stem outputs wider than this are average-pooled down before the probe sees them (see _capped).
MAX_STEM_FEATURES = 512
PROBE_FOLDS = 5
_PROBE_L2 = 1e-1  # on the mean logistic loss; weights only, not the bias
_PROBE_STEPS = 100  # LBFGS iterations, full batch: deterministic for a given input


@dataclass(frozen=True)
class ProbeResult:
    """A linear membership probe's out-of-fold grade. AUC is a fraction (0-1), accuracy a percentage (0-100).

    members, nonmembers: samples per group after balancing (equal by construction).
    """

    layer: ProbeLayer
    auc: float
    accuracy: float
    members: int
    nonmembers: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GradientAttackResult:
    """The gradient-norm attack's grade. AUC is a fraction (0-1), the TPR a percentage (0-100)."""

    auc: float
    tpr_at_1pct_fpr: float
    members: int
    nonmembers: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RelearnResult:
    """curve[e]: accuracy (percent) on the probe after e epochs, curve[0] before any fine-tuning.

    epochs: the first e with curve[e] >= threshold, None if no epoch within the budget got there.
    """

    epochs: int | None
    threshold: float
    curve: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "threshold": self.threshold, "curve": list(self.curve)}


def _capped(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) or (B, D) stem output -> (B, D') with D' <= MAX_STEM_FEATURES where the channels allow.

    A probe with far more weights than training samples can fit any labelling of
    its training fold, and its held-out score is then noise that hides a real
    signal. Averaging neighbouring positions keeps every channel and gives up
    only spatial detail. A stem that already flattened its map (``cnn``) is
    pooled along the flat vector, whose neighbours are still neighbouring positions.
    """
    if features[0].numel() <= MAX_STEM_FEATURES:
        return features.flatten(1)
    if features.dim() == 4:
        side = max(1, math.isqrt(MAX_STEM_FEATURES // features.shape[1]))
        return F.adaptive_avg_pool2d(features, side).flatten(1)
    return F.adaptive_avg_pool1d(features.flatten(1).unsqueeze(1), MAX_STEM_FEATURES).squeeze(1)


@torch.no_grad()
def _layer_features(
    model: Classifier, data: LabeledData, layer: ProbeLayer, *, device: torch.device, batch_size: int = 512
) -> torch.Tensor:
    """(N, C, H, W) inputs -> (N, D) float64 features on the CPU, in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        parts = [
            model.embed(x.to(device)) if layer == "penultimate" else _capped(model.stem(x.to(device)))
            for x, _ in data.batches(batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat([part.double().cpu() for part in parts])


def _probe_scores(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor) -> torch.Tensor:
    """Fit an L2-regularised logistic regression on (n, D), (n,); return (m,) logits of ``test_x``.

    Standardised with the training fold's statistics only, so nothing of the held-out fold leaks in.
    """
    mean, std = train_x.mean(0), train_x.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # dead units: constant, left at zero
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    weight = torch.zeros(train_x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=_PROBE_STEPS, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = train_x @ weight + bias
        loss = F.binary_cross_entropy_with_logits(logits, train_y) + 0.5 * _PROBE_L2 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return (test_x @ weight + bias).detach()


def _out_of_fold_scores(members: torch.Tensor, nonmembers: torch.Tensor, folds: int) -> torch.Tensor:
    """(n, D) and (n, D) shuffled features -> (2n,) probe logits, each from the fold model that did not see it.

    Fold = position mod ``folds`` within each group, so every fold is balanced.
    """
    n = len(members)
    features = torch.cat([members, nonmembers])
    labels = torch.cat([torch.ones(n), torch.zeros(n)]).double()
    fold = (torch.arange(n) % folds).repeat(2)
    scores = torch.empty(2 * n, dtype=torch.float64)
    for held_out in range(folds):
        test = fold == held_out
        scores[test] = _probe_scores(features[~test], labels[~test], features[test])
    return scores


def linear_probe(
    model: Classifier, forget: LabeledData, holdout: LabeledData, *, layer: ProbeLayer,
    device: torch.device, seed: int = 0,
) -> ProbeResult:
    """Cross-validated linear membership probe on ``layer``'s features: forget (members) vs hold-out.

    Why: a model that forgot only at its outputs still separates its former
    members in its features, so the probe scores well above retrain's (about 0.5
    when the hold-out is drawn like the forget set). Groups are balanced by a
    seeded subsample; up to PROBE_FOLDS folds, fewer for tiny groups. The model
    must already be on ``device``; it is left as it was found.
    """
    if layer not in get_args(ProbeLayer):
        raise ConfigError(f"unknown probe layer {layer!r}; valid: {', '.join(get_args(ProbeLayer))}")
    n = min(len(forget), len(holdout))
    folds = min(PROBE_FOLDS, n // 2)
    if folds < 2:
        raise ConfigError(
            f"a linear probe needs at least 4 forget and 4 hold-out samples (2 per group in each of 2 folds), "
            f"got {len(forget)} and {len(holdout)}"
        )
    generator = torch.Generator().manual_seed(seed)
    groups = [data.subset(torch.randperm(len(data), generator=generator)[:n]) for data in (forget, holdout)]
    members, nonmembers = (_layer_features(model, data, layer, device=device) for data in groups)
    scores = _out_of_fold_scores(members, nonmembers, folds)
    predicted_member = scores > 0
    correct = torch.cat([predicted_member[:n], ~predicted_member[n:]])
    return ProbeResult(
        layer=layer,
        auc=roc_auc(scores[:n].numpy(), scores[n:].numpy()),
        accuracy=100.0 * float(correct.double().mean()),
        members=n,
        nonmembers=n,
    )


def _per_sample_norm(model: nn.Module) -> Callable[..., torch.Tensor]:
    """(params, buffers, x (C, H, W), y ()) -> () L2 norm of the gradient of the sample's cross-entropy."""

    def loss(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor,
             y: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (params, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(logits, y.unsqueeze(0))

    def norm(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor,
             y: torch.Tensor) -> torch.Tensor:
        grads = grad(loss)(params, buffers, x, y)
        return torch.stack([g.square().sum() for g in grads.values()]).sum().sqrt()

    return norm


def gradient_norms(model: nn.Module, data: LabeledData, *, device: torch.device, batch_size: int = 32) -> np.ndarray:
    """(N,) float64 L2 norms of each sample's loss gradient w.r.t. all parameters, in eval mode.

    Batched with torch.func (vmap over grad); eval mode makes BatchNorm use its
    running statistics, so one sample's gradient never depends on its batch.
    Memory: batch_size x number of parameters floats; lower it for large models.
    The model must already be on ``device``; it is left as it was found.
    """
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    batched = vmap(_per_sample_norm(model), in_dims=(None, None, 0, 0))
    was_training = model.training
    model.eval()
    try:
        norms = [batched(params, buffers, x.to(device), y.to(device)).cpu() for x, y in data.batches(batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(norms).double().numpy() if norms else np.empty(0)


def gradient_norm_attack(
    model: nn.Module, forget: LabeledData, holdout: LabeledData, *, device: torch.device, batch_size: int = 32
) -> GradientAttackResult:
    """Gradient-norm membership attack: forget (members) vs hold-out, scored by the negative gradient norm.

    Why: training drives its samples' gradients towards zero, so members have
    small ones. A model that forgot only by reshaping its outputs can keep them
    small on the forget set; an AUC well above retrain's says the samples still
    sit at a fitted point of the loss landscape.
    """
    if len(forget) == 0 or len(holdout) == 0:
        raise ConfigError(
            f"the gradient-norm attack needs forget and hold-out samples, got {len(forget)} and {len(holdout)}"
        )
    members = -gradient_norms(model, forget, device=device, batch_size=batch_size)
    nonmembers = -gradient_norms(model, holdout, device=device, batch_size=batch_size)
    return GradientAttackResult(
        auc=roc_auc(members, nonmembers),
        tpr_at_1pct_fpr=100.0 * tpr_at_fpr(members, nonmembers, 0.01),
        members=len(forget),
        nonmembers=len(holdout),
    )


def relearn_epochs(
    model: nn.Module, forget_few: LabeledData, retain_sample: LabeledData, probe: LabeledData, *,
    threshold: float, max_epochs: int, lr: float = 1e-3, batch_size: int = 32,
    device: torch.device, seed: int = 0,
) -> RelearnResult:
    """Epochs of fine-tuning a copy on forget_few + retain_sample until probe accuracy reaches ``threshold``.

    Why: a model that hid a class instead of forgetting it relearns it from a
    handful of samples in an epoch or two, where retrain needs about as long as
    a model that never saw it. probe: held-out samples of the forgotten class.
    Adam at a constant ``lr`` (a schedule would tie the count to the budget),
    always for all ``max_epochs``, so the curve also shows whether the class
    stays relearned; ``seed`` fixes the batch order. ``model`` is not modified.
    """
    if not 0.0 < threshold <= 100.0:
        raise ConfigError(f"threshold is a percentage in (0, 100], got {threshold}")
    if max_epochs < 1:
        raise ConfigError(f"max_epochs must be >= 1, got {max_epochs}")
    if len(probe) == 0:
        raise ConfigError("relearning needs held-out samples of the forgotten class to measure, got none")
    recipe = TrainConfig(epochs=max_epochs, batch_size=batch_size, lr=lr, schedule="constant")
    student = copy.deepcopy(model).to(device)
    curve = [accuracy(student, probe, device=device)]
    train(student, concat(forget_few, retain_sample), recipe, device=device,
          generator=torch.Generator().manual_seed(seed),
          on_epoch=lambda _: curve.append(accuracy(student, probe, device=device)))
    reached = [epoch for epoch, acc in enumerate(curve) if acc >= threshold]
    return RelearnResult(epochs=reached[0] if reached else None, threshold=threshold, curve=tuple(curve))
