"""Projected gradient ascent (Halimi, Kadhe, Rawat, Baracaldo 2022, "Federated Unlearning: How to
Efficiently Erase a Client in FL?").

The requester reverses learning: it maximises the cross-entropy on its forget
set. The loss is unbounded above, so each step is followed by a projection onto
an L2 ball around a reference model: the ascent may move away from what the
federation learnt, but never further than the radius, which keeps the model
usable for the FedAvg rounds that follow (the server's part, ``server/baselines.py``).

Adapted from the paper, and why:

- the ball's centre: Halimi use the average of the *other* clients' local models
  from the last training round. A client here only receives the global model, and
  the server keeps no per-client models of that round, so the centre is the global
  model before unlearning (``task.original``). It still holds the requester's own
  contribution, which the ascent has to undo inside the radius;
- the radius: a share of the centre's parameter norm, so that one number suits
  models of any size (the paper sizes it from the distance to random models);
- the stop: Halimi stop once accuracy on the target's data falls below a
  threshold. Here the threshold is the original model's accuracy on the
  non-members the forget set should come to look like (``task.reference``),
  what a model that never saw the forget set scores on it: DESIGN section 1 asks
  for indistinguishability, and ascending past it is itself a leak. Otherwise
  the ascent stops at ``max_steps``.

Plain SGD steps (projected gradient descent on the negated loss), in eval mode:
normalisation statistics are buffers the projection does not cover, so they must
not drift with the ascent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from fedunlearn.common.models import Classifier
from fedunlearn.common.training import accuracy, check_finite, make_optimizer
from fedunlearn.common.unlearning.base import Outcome, UnlearningTask, register_method
from fedunlearn.common.unlearning.baselines import check_fraction, check_positive, check_positive_int

__all__ = ["PROJECTED_ASCENT", "ProjectedAscentParams", "parameter_distance", "project_to_ball"]

PROJECTED_ASCENT = "projected_ascent"  # the registry name, which the server names in train.unlearn


@dataclass(frozen=True)
class ProjectedAscentParams:
    """radius: the ball's radius as a share of the centre's parameter norm; lr: SGD step size;
    max_steps: the step budget; batch_size: forget samples per step."""

    radius: float = 0.05
    lr: float = 1e-2
    max_steps: int = 100
    batch_size: int = 64

    def __post_init__(self) -> None:
        check_fraction("radius", self.radius, closed=True)
        check_positive("lr", self.lr)
        check_positive_int("max_steps", self.max_steps)
        check_positive_int("batch_size", self.batch_size)


def parameter_distance(model: Classifier, centre: dict[str, torch.Tensor]) -> float:
    """L2 distance between the model's parameters and ``centre`` (name -> tensor), over all of them."""
    with torch.no_grad():
        return float(sum(((p - centre[n]) ** 2).sum() for n, p in model.named_parameters())) ** 0.5


def project_to_ball(model: Classifier, centre: dict[str, torch.Tensor], radius: float) -> None:
    """Move the parameters (in place) onto the nearest point of the ball ||w - centre|| <= radius:
    along the line to the centre, untouched when already inside."""
    distance = parameter_distance(model, centre)
    if distance <= radius:
        return
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(centre[name] + (param - centre[name]) * (radius / distance))


@register_method(PROJECTED_ASCENT, ProjectedAscentParams, needs_retain=False)
def projected_ascent(model: Classifier, task: UnlearningTask, params: ProjectedAscentParams) -> Outcome:
    """Ascend the forget set's loss inside the ball around the original (module docstring). Needs no
    retain data: a leaving client, which holds none, is the case the method was made for."""
    device = task.device
    centre = {name: p.detach().clone() for name, p in model.named_parameters()}
    radius = params.radius * float(sum((p**2).sum() for p in centre.values())) ** 0.5
    threshold = accuracy(model, task.reference, device=device)  # still the original: nothing moved yet
    forget_accuracy = accuracy(model, task.forget, device=device)
    optimizer = make_optimizer(list(model.parameters()), "sgd", params.lr, momentum=0.0)
    generator = torch.Generator().manual_seed(task.seed)
    model.eval()
    steps = 0
    while forget_accuracy > threshold and steps < params.max_steps:
        for x, y in task.forget.batches(params.batch_size, shuffle=True, generator=generator):
            loss = -F.cross_entropy(model(x.to(device)), y.to(device))
            check_finite(loss, "projected ascent loss")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            project_to_ball(model, centre, radius)
            steps += 1
            forget_accuracy = accuracy(model, task.forget, device=device)
            if forget_accuracy <= threshold or steps == params.max_steps:
                break
    optimizer.zero_grad(set_to_none=True)
    if forget_accuracy <= threshold:
        why = f"forget accuracy {forget_accuracy:.1f}% reached the non-members' {threshold:.1f}% in {steps} steps"
    else:
        why = f"step budget spent; forget accuracy {forget_accuracy:.1f}%, the non-members' {threshold:.1f}%"
    return Outcome(model, steps, why)
