"""Fisher forgetting (Golatkar, Achille, Soatto, CVPR 2020, "Eternal Sunshine of the Spotless Net").

Weights the retain set barely constrains can be scrambled without hurting the
retain set, and whatever the forget set stored in them goes with the noise.
The diagonal Fisher information on the retain set measures that constraint;
the scrub adds Gaussian noise with per-weight std ``alpha * F^(-1/4)``, capped
at ``max_std`` because a weight with zero Fisher would otherwise get infinite
noise. No gradient step is taken.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.models import Classifier
from fedunlearn.common.unlearning.base import Outcome, UnlearningTask, register_method
from fedunlearn.common.unlearning.baselines import check_positive, check_positive_int

__all__ = ["FisherParams", "fisher_diagonal", "fisher_noise_std"]


@dataclass(frozen=True)
class FisherParams:
    """alpha: noise scale; max_std: cap per weight; samples: retain samples in the Fisher estimate;
    batch_size: samples per vectorised per-sample-gradient call (memory grows with it)."""

    alpha: float = 1e-2
    max_std: float = 0.1
    samples: int = 1000
    batch_size: int = 64

    def __post_init__(self) -> None:
        check_positive("alpha", self.alpha)
        check_positive("max_std", self.max_std)
        check_positive_int("samples", self.samples)
        check_positive_int("batch_size", self.batch_size)


def fisher_diagonal(
    model: Classifier,
    data: LabeledData,
    *,
    samples: int,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Diagonal Fisher E_x E_{y~p(y|x)} [(d log p(y|x) / d w)^2] per parameter, on ``device``.

    The label is sampled from the model's own predictive distribution (the true
    Fisher, a Monte-Carlo estimate with one draw per sample) rather than taken
    from the data (the "empirical Fisher"): on a model that fits its training
    set the true labels give near-zero gradients everywhere and would call every
    weight unconstrained. Uses ``min(samples, len(data))`` samples drawn without
    replacement. Evaluated in eval mode so normalisation layers use (and keep)
    their running statistics.
    """
    model.to(device).eval()
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def nll(weights: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (weights, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(logits, y.unsqueeze(0))

    per_sample_grads = vmap(grad(nll), in_dims=(None, 0, 0))
    pick = torch.randperm(len(data), generator=generator)[:samples]
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    for x, _ in data.subset(pick).batches(batch_size):
        x = x.to(device)
        with torch.no_grad():
            probs = F.softmax(model(x), dim=1).float().cpu()
        y = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(device)
        for name, g in per_sample_grads(params, x, y).items():
            total[name] += g.pow(2).sum(0)
    return {name: t / len(pick) for name, t in total.items()}


def fisher_noise_std(fisher: torch.Tensor, *, alpha: float, max_std: float) -> torch.Tensor:
    """Per-weight std ``min(alpha * F^(-1/4), max_std)``: less information, more noise.

    F = 0 gives an infinite power, which the cap turns into ``max_std``.
    """
    return (alpha * fisher.clamp(min=0).pow(-0.25)).clamp(max=max_std)


@register_method("fisher", FisherParams)
def fisher(model: Classifier, task: UnlearningTask, params: FisherParams) -> Outcome:
    """Estimate the retain-set Fisher, then add the scaled Gaussian noise to every parameter."""
    generator = torch.Generator().manual_seed(task.seed)
    info = fisher_diagonal(
        model, task.retain, samples=params.samples, batch_size=params.batch_size,
        device=task.device, generator=generator,
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            std = fisher_noise_std(info[name], alpha=params.alpha, max_std=params.max_std)
            # drawn on the CPU so that a seed gives the same noise on every device
            noise = torch.randn(p.shape, generator=generator).to(device=p.device, dtype=p.dtype)
            p.add_(std * noise)
    batches = math.ceil(min(params.samples, len(task.retain)) / params.batch_size)
    return Outcome(model, batches, "fisher noise applied")
