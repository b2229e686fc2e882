"""Baseline unlearning methods that ReMI is compared against.

``retrain`` is the gold standard every metric is shown next to; ``finetune``,
``neggrad_plus`` and ``random_label`` are the cheap approximate methods of the
unlearning literature. Fisher forgetting and SalUn live in their own modules
(``fisher``, ``salun``) and reuse the pieces exported here: the shared
hyper-parameter checks, the wrong-label sampler and the forget/retain pair loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import ConfigError
from fedunlearn.common.models import Classifier, build_model
from fedunlearn.common.training import OptimizerName, TrainConfig, check_finite, make_optimizer, train
from fedunlearn.common.unlearning.base import Outcome, UnlearningTask, register_method
from fedunlearn.common.unlearning.stopping import EpochStop, StopTolerances

__all__ = [
    "Batch",
    "FinetuneParams",
    "NegGradPlusParams",
    "PairLoss",
    "RandomLabelParams",
    "RetrainParams",
    "StepParams",
    "check_fraction",
    "check_positive",
    "check_positive_int",
    "random_label_finetune",
    "random_wrong_labels",
    "train_on_pairs",
    "with_epoch_stop",
]

Batch = tuple[torch.Tensor, torch.Tensor]
# (model, forget batch, retain batch) -> scalar loss, both batches already on the task's device
PairLoss = Callable[[Classifier, Batch, Batch], torch.Tensor]


def check_positive_int(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value}")


def check_positive(name: str, value: float) -> None:
    """Finite and > 0: learning rates, noise scales."""
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{name} must be a positive finite number, got {value}")


def check_fraction(name: str, value: float, *, closed: bool) -> None:
    """In (0, 1], or in (0, 1) when ``closed`` is False (a mixing weight must keep both terms)."""
    upper_ok = value <= 1 if closed else value < 1
    if not (value > 0 and upper_ok):
        interval = "(0, 1]" if closed else "(0, 1)"
        raise ConfigError(f"{name} must be in {interval}, got {value}")


@dataclass(frozen=True)
class RetrainParams:
    """Retraining has no knobs of its own: it repeats ``task.recipe`` on the retain set."""


@dataclass(frozen=True)
class StepParams(StopTolerances):
    """What every gradient-step baseline needs; subclasses set their own defaults. ``early_stop``: audit
    after every epoch as ReMI audits every few steps, stop once the forget set looks like the reference
    set, and end at the best point (``stopping.EpochStop``, with the inherited tolerances)."""

    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 64
    optimizer: OptimizerName = "adam"
    early_stop: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("epochs", self.epochs)
        check_positive("lr", self.lr)
        check_positive_int("batch_size", self.batch_size)
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")


@dataclass(frozen=True)
class FinetuneParams(StepParams):
    """Epochs over the retain set; a raised lr is what makes the model drift off the forget set."""

    epochs: int = 5
    lr: float = 5e-3


@dataclass(frozen=True)
class NegGradPlusParams(StepParams):
    """Epochs over the forget set; ``alpha`` weighs the retain term against the forget ascent."""

    epochs: int = 5
    lr: float = 1e-3
    alpha: float = 0.95

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction("alpha", self.alpha, closed=False)


@dataclass(frozen=True)
class RandomLabelParams(StepParams):
    """Epochs over the forget set, each forget batch paired with a retain batch."""

    epochs: int = 5
    lr: float = 4e-4


def random_wrong_labels(y: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A label drawn uniformly from the ``num_classes - 1`` classes other than ``y``, per sample.

    Shifting by 1..K-1 modulo K never lands on the true class, so no draw is wasted.
    y: (N,) int64 on the CPU -> (N,) int64.
    """
    if num_classes < 2:
        raise ConfigError(f"random labels need at least 2 classes, got {num_classes}")
    shift = torch.randint(1, num_classes, y.shape, generator=generator)
    return (y + shift) % num_classes


def _mask_grads(model: Classifier, grad_mask: dict[str, torch.Tensor]) -> None:
    """Zero the gradient outside the mask, so the step leaves those weights exactly as they are.

    Exact only because the pair loop's optimizer has no weight decay, which would still shrink them.
    """
    for name, param in model.named_parameters():
        if param.grad is not None:
            param.grad.mul_(grad_mask[name])


def train_on_pairs(
    model: Classifier,
    task: UnlearningTask,
    forget: LabeledData,
    params: StepParams,
    loss_fn: PairLoss,
    *,
    generator: torch.Generator,
    what: str,
    grad_mask: dict[str, torch.Tensor] | None = None,
    on_epoch: Callable[[int], bool] | None = None,
) -> int:
    """Walk ``forget`` ``params.epochs`` times, pairing each forget batch with a random retain batch;
    ``on_epoch(epoch)`` (from 0) after each may end the walk by returning True.

    The forget set is usually small, so epochs are counted over it; drawing a
    retain batch for every step keeps the primary task in every update.
    ``grad_mask`` (name -> 0/1 tensor shaped like the parameter) freezes the
    weights it zeroes. Trains ``model`` in place; returns the number of steps.
    """
    device = task.device
    model.to(device).train()
    optimizer = make_optimizer(list(model.parameters()), params.optimizer, params.lr)
    steps = 0
    for epoch in range(params.epochs):
        for xf, yf in forget.batches(params.batch_size, shuffle=True, generator=generator):
            xr, yr = task.retain.sample_batch(params.batch_size, generator)
            loss = loss_fn(model, (xf.to(device), yf.to(device)), (xr.to(device), yr.to(device)))
            check_finite(loss, what)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_mask is not None:
                _mask_grads(model, grad_mask)
            optimizer.step()
            steps += 1
        if on_epoch is not None and on_epoch(epoch):
            break
    model.eval()
    return steps


def _joint_cross_entropy(model: Classifier, forget: Batch, retain: Batch) -> torch.Tensor:
    """One forward over both batches, so normalisation layers see a mixed batch."""
    logits = model(torch.cat([forget[0], retain[0]]))
    return F.cross_entropy(logits, torch.cat([forget[1], retain[1]]))


def random_label_finetune(
    model: Classifier,
    task: UnlearningTask,
    params: StepParams,
    *,
    grad_mask: dict[str, torch.Tensor] | None = None,
    on_epoch: Callable[[int], bool] | None = None,
) -> int:
    """Fine-tune on forget samples carrying fixed random wrong labels, mixed with retain batches.

    Shared by ``random_label`` (all weights) and ``salun`` (salient weights only).
    Returns the number of optimizer steps.
    """
    generator = torch.Generator().manual_seed(task.seed)
    wrong = random_wrong_labels(task.forget.y, task.spec.num_classes, generator)
    return train_on_pairs(
        model, task, task.forget.with_labels(wrong), params, _joint_cross_entropy,
        generator=generator, what="random-label loss", grad_mask=grad_mask, on_epoch=on_epoch,
    )


def with_epoch_stop(model: Classifier, task: UnlearningTask, params: StepParams,
                    run: Callable[[Callable[[int], bool] | None], int]) -> Outcome:
    """``run(on_epoch)`` (the method's epochs; it returns its optimizer steps), with the epoch check as
    ``on_epoch`` when ``params.early_stop``, and the outcome that says how it ended."""
    if not params.early_stop:
        return Outcome(model, run(None), f"completed {params.epochs} epochs")
    stop = EpochStop(model, task, params)
    if stop.done:
        return Outcome(model, 0, "already indistinguishable")
    steps = run(stop)
    return Outcome(model, steps, stop.finish(params.epochs))


def _steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


@register_method("retrain", RetrainParams)
def retrain(model: Classifier, task: UnlearningTask, params: RetrainParams) -> Outcome:
    """Train a fresh model with the original recipe on the retain set only (the copy is discarded)."""
    fresh = build_model(task.spec, seed=task.seed).to(task.device)
    generator = torch.Generator().manual_seed(task.seed)
    train(fresh, task.retain, task.recipe, device=task.device, generator=generator)
    steps = task.recipe.epochs * _steps_per_epoch(len(task.retain), task.recipe.batch_size)
    return Outcome(fresh, steps, f"retrained for {task.recipe.epochs} epochs")


@register_method("finetune", FinetuneParams)
def finetune(model: Classifier, task: UnlearningTask, params: FinetuneParams) -> Outcome:
    """Keep training on the retain set only, relying on the forget set being overwritten."""
    config = TrainConfig(
        epochs=params.epochs, batch_size=params.batch_size, lr=params.lr, optimizer=params.optimizer
    )
    generator = torch.Generator().manual_seed(task.seed)

    def epochs(on_epoch: Callable[[int], bool] | None) -> int:
        ran = [0]

        def counted(epoch: int) -> bool:
            ran[0] = epoch + 1
            return bool(on_epoch and on_epoch(epoch))

        train(model, task.retain, config, device=task.device, generator=generator, on_epoch=counted)
        return ran[0] * _steps_per_epoch(len(task.retain), params.batch_size)

    return with_epoch_stop(model, task, params, epochs)


@register_method("neggrad_plus", NegGradPlusParams)
def neggrad_plus(model: Classifier, task: UnlearningTask, params: NegGradPlusParams) -> Outcome:
    """Gradient ascent on the forget set, anchored by descent on the retain set (Kurmanji et al., 2023).

    Per step: alpha * CE(retain) - (1 - alpha) * CE(forget). The forget term is
    unbounded below, so a run that diverges stops with NonFiniteError. One
    forward over both batches, so a last forget batch of one sample still gives
    normalisation layers a batch statistic.
    """

    def loss_fn(net: Classifier, forget: Batch, retain: Batch) -> torch.Tensor:
        logits = net(torch.cat([forget[0], retain[0]]))
        n_forget = forget[0].shape[0]
        ascend = F.cross_entropy(logits[:n_forget], forget[1])
        keep = F.cross_entropy(logits[n_forget:], retain[1])
        return params.alpha * keep - (1 - params.alpha) * ascend

    generator = torch.Generator().manual_seed(task.seed)
    return with_epoch_stop(model, task, params, lambda on_epoch: train_on_pairs(
        model, task, task.forget, params, loss_fn, generator=generator, what="neggrad_plus loss", on_epoch=on_epoch))


@register_method("random_label", RandomLabelParams)
def random_label(model: Classifier, task: UnlearningTask, params: RandomLabelParams) -> Outcome:
    """Teach the model wrong labels on the forget set while retain batches hold the task (all weights)."""
    return with_epoch_stop(model, task, params,
                           lambda on_epoch: random_label_finetune(model, task, params, on_epoch=on_epoch))
