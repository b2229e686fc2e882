"""Leakage approximators and the two closed forms ReMI's loss is built from."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import pytest
import torch
from torch.distributions import Normal, kl_divergence
from torch.nn import functional as F

from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.models import Classifier
from fedunlearn.common.unlearning.base import UnlearningTask
from fedunlearn.common.unlearning.leakage import (
    LEAKAGE,
    LeakageApproximator,
    Outputs,
    forward_outputs,
    gaussian_kl,
    membership_statistic,
)

# --- membership_statistic ----------------------------------------------------------------------------


def test_membership_statistic_is_the_logit_of_the_true_class_probability() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.5], [0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 2, 1, 1])
    p = F.softmax(logits.double(), dim=1)[torch.arange(4), labels]
    expected = torch.log(p) - torch.log1p(-p)
    stat = membership_statistic(logits, labels)
    assert stat.shape == (4,)
    assert torch.allclose(stat.double(), expected, atol=1e-5)
    assert stat[3] == pytest.approx(math.log(1 / 3) - math.log(2 / 3), abs=1e-6)


def test_membership_statistic_is_finite_where_p_y_rounds_to_one() -> None:
    """Memorised samples sit at p_y = 1 - 1e-26; the naive log(1 - p_y) would be -inf there."""
    logits = torch.tensor([[60.0, 0.0, 0.0], [60.0, 0.0, 0.0], [0.0, 1000.0, -1000.0]], requires_grad=True)
    labels = torch.tensor([0, 1, 1])
    stat = membership_statistic(logits, labels)
    assert torch.isfinite(stat).all()
    assert stat[0].item() == pytest.approx(60.0 - math.log(2.0), abs=1e-4)
    assert stat[1].item() == pytest.approx(-60.0, abs=1e-4)
    assert stat[2].item() == pytest.approx(1000.0, abs=1e-3)
    stat.sum().backward()  # ReMI differentiates it on exactly these samples
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_membership_statistic_does_not_modify_the_logits() -> None:
    logits = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    before = logits.clone()
    membership_statistic(logits, torch.tensor([0, 1]))
    assert torch.equal(logits, before)


# --- gaussian_kl ----------------------------------------------------------------------------------------


def _normal(sample: torch.Tensor) -> Normal:
    """The Gaussian gaussian_kl fits: mean and population (biased) standard deviation."""
    return Normal(sample.mean(), sample.std(unbiased=False))


def test_gaussian_kl_matches_torch_distributions() -> None:
    generator = torch.Generator().manual_seed(0)
    # Few samples, so population and sample standard deviations differ clearly.
    a = torch.randn(6, generator=generator, dtype=torch.float64) * 2.0 + 1.0
    b = torch.randn(5, generator=generator, dtype=torch.float64) * 0.5 - 1.0
    for sample, target in ((a, b), (b, a)):
        expected = kl_divergence(_normal(sample), _normal(target))
        assert gaussian_kl(sample, target, eps=0.0).item() == pytest.approx(expected.item(), rel=1e-9)
        # the default eps only guards a collapsed spread: a small change for spreads near 1
        assert gaussian_kl(sample, target).item() == pytest.approx(expected.item(), rel=0.02)
    assert gaussian_kl(a, b, eps=0.0).item() != pytest.approx(gaussian_kl(b, a, eps=0.0).item())


def test_gaussian_kl_is_zero_for_the_same_sample_and_positive_otherwise() -> None:
    x = torch.randn(50, generator=torch.Generator().manual_seed(1))
    assert gaussian_kl(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert gaussian_kl(x, x.flip(0)).item() == pytest.approx(0.0, abs=1e-6)  # order does not matter
    assert gaussian_kl(x + 1.0, x).item() > 0.1
    assert gaussian_kl(x * 3.0, x).item() > 0.1


def test_gaussian_kl_is_differentiable_in_both_arguments() -> None:
    generator = torch.Generator().manual_seed(2)
    sample = (torch.randn(20, generator=generator) + 2.0).requires_grad_()
    target = torch.randn(30, generator=generator).requires_grad_()
    gaussian_kl(sample, target).backward()
    for tensor in (sample, target):
        assert tensor.grad is not None
        assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


def test_gaussian_kl_survives_a_collapsed_spread() -> None:
    constant = torch.full((10,), 3.0, requires_grad=True)
    spread = torch.randn(10, generator=torch.Generator().manual_seed(3))
    for sample, target in ((constant, spread), (spread, constant), (constant, constant)):
        assert torch.isfinite(gaussian_kl(sample, target))
    gaussian_kl(constant, spread).backward()
    assert constant.grad is not None and torch.isfinite(constant.grad).all()


# --- forward_outputs ----------------------------------------------------------------------------------


def test_forward_outputs_share_one_pass(memorised_sample_task: UnlearningTask) -> None:
    model, data = memorised_sample_task.original, memorised_sample_task.forget
    outputs = forward_outputs(model, data.x, data.y)
    with torch.no_grad():
        assert torch.allclose(outputs.logits, model(data.x), atol=1e-5)
        assert torch.allclose(outputs.embeddings, model.embed(data.x))
    assert torch.equal(outputs.labels, data.y)
    detached = outputs.detach()
    assert not detached.logits.requires_grad and not detached.embeddings.requires_grad
    assert outputs.logits.requires_grad  # the original is left as it was


# --- the approximator contract, over every registered name ---------------------------------------------


@dataclass(frozen=True)
class Fitted:
    """An approximator fitted on members (retain) vs non-members (reference) of a private model copy."""

    name: str
    model: Classifier
    approximator: LeakageApproximator


@pytest.fixture(scope="module", params=LEAKAGE.names())
def fitted(request: pytest.FixtureRequest, memorised_sample_task: UnlearningTask) -> Fitted:
    task = memorised_sample_task
    model = copy.deepcopy(task.original)
    approximator = LEAKAGE.get(request.param)(task.spec.num_classes, task.seed)
    approximator.fit(model, task.retain, task.reference)
    return Fitted(request.param, model, approximator)


def _halves(task: UnlearningTask) -> tuple[LabeledData, LabeledData]:
    """Two disjoint halves of the non-member reference."""
    order = torch.arange(len(task.reference))
    half = len(order) // 2
    return task.reference.subset(order[:half]), task.reference.subset(order[half:])


def _members(task: UnlearningTask) -> LabeledData:
    """Training members, as many as half the reference: the forget set alone (61 samples) is too
    small for a mean-loss statistic to tell apart from non-members reliably."""
    return task.retain.subset(torch.arange(len(task.reference) // 2))


def _outputs(model: Classifier, data: LabeledData) -> Outputs:
    return forward_outputs(model, data.x, data.y)


def test_members_leak_a_finite_positive_amount_with_a_gradient(
    fitted: Fitted, memorised_sample_task: UnlearningTask
) -> None:
    task, model = memorised_sample_task, fitted.model
    model.zero_grad(set_to_none=True)
    reference = _outputs(model, _halves(task)[0]).detach()
    leak = fitted.approximator.leakage(_outputs(model, _members(task)), reference)
    assert leak.ndim == 0
    assert torch.isfinite(leak)
    assert leak.item() > 0, f"{fitted.name} sees no leakage from training members"
    leak.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{fitted.name} gives no gradient"


def test_non_members_do_not_leak(fitted: Fitted, memorised_sample_task: UnlearningTask) -> None:
    task, model, leakage = memorised_sample_task, fitted.model, fitted.approximator.leakage
    first, second = _halves(task)
    with torch.no_grad():
        reference = _outputs(model, first)
        same = leakage(reference, reference)
        unseen = leakage(_outputs(model, second), reference)
        members = leakage(_outputs(model, _members(task)), reference)
    assert same.item() == pytest.approx(0.0, abs=1e-6), fitted.name
    assert 0.0 <= unseen.item() < 0.05, fitted.name
    assert unseen.item() < members.item(), fitted.name


def test_looking_less_member_like_than_the_reference_is_not_rewarded(
    fitted: Fitted, memorised_sample_task: UnlearningTask
) -> None:
    """One-sided: a forget batch that looks *less* member-like than the reference scores 0, never < 0,
    so the loss cannot pull forget samples past non-members (the Streisand effect)."""
    task, model = memorised_sample_task, fitted.model
    with torch.no_grad():
        members_as_target = _outputs(model, _members(task))
        leak = fitted.approximator.leakage(_outputs(model, _halves(task)[0]), members_as_target)
    assert leak.item() >= 0.0
    assert leak.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", LEAKAGE.names())
def test_fit_leaves_the_model_alone_and_repeats(name: str, memorised_sample_task: UnlearningTask) -> None:
    """Same seed and same global RNG state (run_method fixes the latter) -> the same fitted attack."""
    task = memorised_sample_task
    model = copy.deepcopy(task.original).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    approximators = []
    for _ in range(2):
        torch.manual_seed(0)
        approximator = LEAKAGE.get(name)(task.spec.num_classes, task.seed)
        approximator.fit(model, task.retain, task.reference)
        approximators.append(approximator)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    with torch.no_grad():
        forget, reference = _outputs(model, _members(task)), _outputs(model, _halves(task)[0])
        first, again = (a.leakage(forget, reference).item() for a in approximators)
    assert first == again


def test_the_design_approximators_are_registered() -> None:
    assert {"shadow", "activation", "loss-stats"} <= set(LEAKAGE.names())
