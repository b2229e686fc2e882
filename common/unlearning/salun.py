"""SalUn (Fan et al., ICLR 2024, "SalUn: Empowering machine unlearning via gradient-based weight saliency").

Random-label fine-tuning moves every weight, including the many the forget set
never relied on, which costs retain accuracy for nothing. SalUn first finds
the salient weights (largest |gradient| of the forget loss) and lets the
random-label fine-tuning update only those.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.models import Classifier
from fedunlearn.common.unlearning.base import Outcome, UnlearningTask, register_method
from fedunlearn.common.unlearning.baselines import (
    StepParams,
    check_fraction,
    random_label_finetune,
    with_epoch_stop,
)

__all__ = ["SalunParams", "forget_gradient", "saliency_mask"]


@dataclass(frozen=True)
class SalunParams(StepParams):
    """mask_fraction: share of all weights (one global threshold) that may change."""

    epochs: int = 5
    lr: float = 5e-4
    mask_fraction: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction("mask_fraction", self.mask_fraction, closed=True)


def forget_gradient(
    model: Classifier, forget: LabeledData, *, batch_size: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Gradient of the mean cross-entropy over the whole forget set (true labels), per parameter.

    Eval mode, so normalisation layers use their running statistics and do not
    update them; ``torch.autograd.grad`` leaves the parameters' ``.grad`` alone.
    """
    model.to(device).eval()
    names, params = zip(*model.named_parameters(), strict=True)
    total = [torch.zeros_like(p) for p in params]
    for x, y in forget.batches(batch_size):
        loss = F.cross_entropy(model(x.to(device)), y.to(device), reduction="sum") / len(forget)
        for acc, g in zip(total, torch.autograd.grad(loss, params, allow_unused=True), strict=True):
            if g is not None:
                acc += g
    return dict(zip(names, total, strict=True))


def saliency_mask(gradients: dict[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    """0/1 masks keeping the ``fraction`` of weights with the largest |gradient|, over all layers at once.

    A global threshold (not per layer) lets the layers the forget set leans on
    take most of the budget. Ties at the threshold are all kept.
    """
    flat = torch.cat([g.abs().flatten() for g in gradients.values()])
    keep = max(1, math.ceil(fraction * flat.numel()))
    threshold = torch.topk(flat, keep, sorted=False).values.min()
    return {name: (g.abs() >= threshold).to(g.dtype) for name, g in gradients.items()}


@register_method("salun", SalunParams)
def salun(model: Classifier, task: UnlearningTask, params: SalunParams) -> Outcome:
    """Random-label fine-tuning restricted to the forget set's salient weights."""
    gradients = forget_gradient(model, task.forget, batch_size=params.batch_size, device=task.device)
    mask = saliency_mask(gradients, params.mask_fraction)
    return with_epoch_stop(model, task, params, lambda on_epoch: random_label_finetune(
        model, task, params, grad_mask=mask, on_epoch=on_epoch))
