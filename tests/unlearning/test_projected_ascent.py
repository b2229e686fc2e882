"""Projected gradient ascent (Halimi et al. 2022): the ball holds, the forget loss rises, the stop rule stops."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn import functional as F

from fedunlearn.common.errors import ConfigError
from fedunlearn.common.models import ModelSpec, build_model
from fedunlearn.common.training import predict_logits
from fedunlearn.common.unlearning import UnlearningTask, parse_params, run_method
from fedunlearn.common.unlearning.projected_ascent import PROJECTED_ASCENT, parameter_distance, project_to_ball

CPU = torch.device("cpu")


def _centre(task: UnlearningTask) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in task.original.named_parameters()}


def _norm(tensors: dict[str, torch.Tensor]) -> float:
    return float(sum((t**2).sum() for t in tensors.values())) ** 0.5


def _forget_loss(task: UnlearningTask, model: torch.nn.Module) -> float:
    return float(F.cross_entropy(predict_logits(model, task.forget.x, device=CPU), task.forget.y))


def test_projection_lands_on_the_sphere_along_the_line_to_the_centre() -> None:
    model = build_model(ModelSpec("mlp", 1, 8, 10), seed=0)
    centre = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    distance = parameter_distance(model, centre)
    project_to_ball(model, centre, distance / 4)
    assert parameter_distance(model, centre) == pytest.approx(distance / 4, rel=1e-5)
    for name, p in model.named_parameters():  # same direction, a quarter of the way
        assert torch.allclose(p, before[name] / 4, atol=1e-7)
    project_to_ball(model, centre, distance)  # inside already: untouched
    assert parameter_distance(model, centre) == pytest.approx(distance / 4, rel=1e-5)


def test_the_ascent_never_leaves_the_ball(memorised_sample_task: UnlearningTask) -> None:
    """A radius far smaller than one step and a big step size: every step must be pulled back."""
    params = parse_params(PROJECTED_ASCENT, {"radius": 0.002, "lr": 1.0, "max_steps": 20})
    result = run_method(PROJECTED_ASCENT, memorised_sample_task, params)
    centre = _centre(memorised_sample_task)
    assert result.steps >= 1
    assert parameter_distance(result.model, centre) <= 0.002 * _norm(centre) * (1 + 1e-4)


def test_the_ascent_raises_the_forget_loss_and_stops_at_the_non_members_accuracy(
    memorised_sample_task: UnlearningTask,
) -> None:
    task = memorised_sample_task
    result = run_method(PROJECTED_ASCENT, task)
    assert _forget_loss(task, result.model) > 2 * _forget_loss(task, task.original)
    assert 1 <= result.steps < parse_params(PROJECTED_ASCENT, {}).max_steps  # the stop rule, not the budget
    assert "reached the non-members'" in result.stop_reason


def test_needs_no_retain_data(memorised_sample_task: UnlearningTask) -> None:
    """A leaving client holds nothing but its forget set."""
    task = memorised_sample_task
    leaving = dataclasses.replace(task, retain=task.retain.subset(torch.zeros(len(task.retain), dtype=torch.bool)))
    result = run_method(PROJECTED_ASCENT, leaving, parse_params(PROJECTED_ASCENT, {"max_steps": 3}))
    assert result.steps >= 1


@pytest.mark.parametrize(("key", "value"), [("radius", 0.0), ("radius", 1.5), ("lr", -1.0), ("max_steps", 0)])
def test_bad_params_are_refused_by_name(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=key):
        parse_params(PROJECTED_ASCENT, {key: value})
