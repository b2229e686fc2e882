"""Baseline unlearning methods: do they forget, keep the task, leave the original alone, repeat exactly?"""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from torch.nn import functional as F

from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import ConfigError, NonFiniteError
from fedunlearn.common.models import Classifier, build_model
from fedunlearn.common.training import accuracy, predict_logits
from fedunlearn.common.unlearning.base import METHODS, UnlearningTask, parse_params, run_method
from fedunlearn.common.unlearning.baselines import random_wrong_labels, train_on_pairs
from fedunlearn.common.unlearning.fisher import fisher_diagonal, fisher_noise_std
from fedunlearn.common.unlearning.salun import forget_gradient, saliency_mask
from fedunlearn.common.unlearning.stopping import EpochStop, StopTolerances

BASELINES = ("retrain", "finetune", "neggrad_plus", "random_label", "fisher", "salun")
# Fisher forgetting only scrubs weights the retain set leaves unconstrained; on an MLP
# whose head rows all carry retain information that blurs every class alike, so it is
# checked on sample forgetting (and its noise law) rather than on class forgetting.
CLASS_FORGETTERS = ("retrain", "finetune", "neggrad_plus", "random_label", "salun")
CPU = torch.device("cpu")


def _forget_loss(model: Classifier, data: LabeledData) -> float:
    return float(F.cross_entropy(predict_logits(model, data.x, device=CPU), data.y))


def _confidence(model: Classifier, data: LabeledData) -> float:
    """Mean softmax probability of the true label."""
    probs = F.softmax(predict_logits(model, data.x, device=CPU), dim=1)
    return float(probs.gather(1, data.y.unsqueeze(1)).mean())


def _weights(model: Classifier) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_every_baseline_is_registered_with_its_own_params() -> None:
    types = [METHODS.get(name).params_type for name in BASELINES]
    assert len(set(types)) == len(BASELINES)
    for name, params_type in zip(BASELINES, types, strict=True):
        assert isinstance(parse_params(name, {}), params_type)


@pytest.mark.parametrize("method", CLASS_FORGETTERS)
def test_class_forgetting_drops_forget_accuracy_and_keeps_retain(
    method: str, class_task: UnlearningTask
) -> None:
    assert accuracy(class_task.original, class_task.forget, device=CPU) == 100.0
    model = run_method(method, class_task).model
    assert accuracy(model, class_task.forget, device=CPU) <= 60.0
    assert accuracy(model, class_task.retain, device=CPU) >= 90.0


def test_retrain_never_predicts_the_forgotten_class(class_task: UnlearningTask) -> None:
    model = run_method("retrain", class_task).model
    assert accuracy(model, class_task.forget, device=CPU) < 5.0


@pytest.mark.parametrize("method", BASELINES)
def test_sample_forgetting_raises_forget_loss_and_keeps_retain(
    method: str, sample_task: UnlearningTask
) -> None:
    original, forget = sample_task.original, sample_task.forget
    model = run_method(method, sample_task).model
    assert _forget_loss(model, forget) >= 2.0 * _forget_loss(original, forget)
    assert _confidence(model, forget) < _confidence(original, forget)
    assert accuracy(model, sample_task.retain, device=CPU) >= 90.0


@pytest.mark.parametrize("method", BASELINES)
def test_original_is_untouched(method: str, sample_task: UnlearningTask) -> None:
    before = _weights(sample_task.original)
    result = run_method(method, sample_task)
    assert _same_weights(before, _weights(sample_task.original))
    assert not _same_weights(before, _weights(result.model))


@pytest.mark.parametrize("method", BASELINES)
def test_same_seed_same_model_other_seed_other_model(method: str, sample_task: UnlearningTask) -> None:
    first, second = run_method(method, sample_task), run_method(method, sample_task)
    assert _same_weights(_weights(first.model), _weights(second.model))
    assert first.steps == second.steps > 0
    reseeded = run_method(method, dataclasses.replace(sample_task, seed=sample_task.seed + 1))
    assert not _same_weights(_weights(first.model), _weights(reseeded.model))


@pytest.mark.parametrize("method", ("neggrad_plus", "random_label", "salun"))
def test_pair_methods_take_one_step_per_forget_batch(method: str, sample_task: UnlearningTask) -> None:
    params = parse_params(method, {"epochs": 3, "batch_size": 50})
    result = run_method(method, sample_task, params)
    assert result.steps == 3 * math.ceil(len(sample_task.forget) / 50)


@pytest.mark.parametrize(
    ("method", "overrides"),
    [
        ("retrain", {"epochs": 3}),
        ("finetune", {"lr": -0.1}),
        ("finetune", {"lr": "nan"}),
        ("finetune", {"epochs": 0}),
        ("finetune", {"batch_size": 0}),
        ("finetune", {"optimizer": "rmsprop"}),
        ("neggrad_plus", {"alpha": 0.0}),
        ("neggrad_plus", {"alpha": 1.0}),
        ("neggrad_plus", {"alpha": "1.5"}),
        ("random_label", {"epochs": "-2"}),
        ("fisher", {"alpha": -1.0}),
        ("fisher", {"max_std": 0.0}),
        ("fisher", {"samples": 0}),
        ("fisher", {"max_std": "inf"}),
        ("salun", {"mask_fraction": 0.0}),
        ("salun", {"mask_fraction": 1.5}),
        ("salun", {"lr": 0.0}),
    ],
)
def test_bad_hyper_parameters_are_config_errors(method: str, overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=method):
        parse_params(method, overrides)


def test_boundary_hyper_parameters_are_accepted() -> None:
    assert parse_params("salun", {"mask_fraction": "1.0"}).mask_fraction == 1.0
    assert parse_params("neggrad_plus", {"alpha": "0.5", "optimizer": "sgd"}).optimizer == "sgd"


def test_neggrad_plus_stops_when_the_ascent_diverges(sample_task: UnlearningTask) -> None:
    params = parse_params("neggrad_plus", {"lr": 1e3, "optimizer": "sgd", "alpha": 0.05, "epochs": 20})
    with pytest.raises(NonFiniteError, match="neggrad_plus loss"):
        run_method("neggrad_plus", sample_task, params)


def test_random_wrong_labels_avoid_the_truth_and_cover_the_rest() -> None:
    y = torch.arange(10).repeat(900)
    wrong = random_wrong_labels(y, 10, torch.Generator().manual_seed(0))
    assert not (wrong == y).any()
    for true_class in range(10):
        counts = torch.bincount(wrong[y == true_class], minlength=10)
        assert counts[true_class] == 0
        others = counts[torch.arange(10) != true_class].float()
        assert others.min() >= 0.6 * others.mean()  # uniform over 9 classes: 100 each


def test_random_wrong_labels_need_two_classes() -> None:
    with pytest.raises(ConfigError):
        random_wrong_labels(torch.zeros(3, dtype=torch.int64), 1, torch.Generator())


def test_fisher_noise_std_falls_with_information_and_is_capped() -> None:
    info = torch.tensor([0.0, 1e-12, 1e-6, 1e-2, 1.0, 16.0])
    std = fisher_noise_std(info, alpha=0.01, max_std=0.1)
    assert std[0] == std[1] == 0.1
    assert torch.all(std[1:] <= std[:-1]) and std[2] > std[3] > std[4] > std[5]
    assert std[4] == pytest.approx(0.01)
    assert std[5] == pytest.approx(0.005)


def test_fisher_diagonal_matches_the_closed_form_for_the_head_bias(sample_task: UnlearningTask) -> None:
    """d(-log p_y)/d b_k = p_k - [y = k]; with y ~ p its expected square summed over k is 1 - sum p_k^2."""
    model = build_model(sample_task.spec, seed=0)  # untrained: spread-out predictions, low MC noise
    data = sample_task.retain
    info = fisher_diagonal(
        model, data, samples=len(data), batch_size=256, device=CPU, generator=torch.Generator().manual_seed(0)
    )
    probs = F.softmax(predict_logits(model, data.x, device=CPU), dim=1)
    expected = float((1 - probs.pow(2).sum(1)).mean())
    assert float(info["head.bias"].sum()) == pytest.approx(expected, rel=0.05)


def test_fisher_noise_follows_the_retain_information(sample_task: UnlearningTask) -> None:
    """Each weight moves by N(0, std(F)); recomputing F the way the method does (same seed) gives std."""
    params = parse_params("fisher", {})
    before = dict(sample_task.original.named_parameters())
    model = run_method("fisher", sample_task, params).model
    info = fisher_diagonal(
        sample_task.original, sample_task.retain, samples=params.samples, batch_size=params.batch_size,
        device=CPU, generator=torch.Generator().manual_seed(sample_task.seed),
    )
    names = list(before)
    flat_info = torch.cat([info[n].flatten() for n in names])
    std = fisher_noise_std(flat_info, alpha=params.alpha, max_std=params.max_std)
    after = dict(model.named_parameters())
    change = torch.cat([(after[n] - before[n]).detach().flatten() for n in names])
    order = flat_info.argsort()
    low, high = order[: len(order) // 10], order[-len(order) // 10 :]
    for group in (order, low, high):
        assert float((change[group] / std[group]).pow(2).mean()) == pytest.approx(1.0, rel=0.1)
    assert change[low].abs().mean() > 1.3 * change[high].abs().mean()


def test_saliency_mask_keeps_the_largest_gradients_across_layers() -> None:
    gradients = {"a": torch.tensor([[-4.0, 1.0], [0.5, 3.0]]), "b": torch.tensor([2.0, -0.1, 0.0, 5.0])}
    mask = saliency_mask(gradients, 0.5)
    assert torch.equal(mask["a"], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert torch.equal(mask["b"], torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert all(m.all() for m in saliency_mask(gradients, 1.0).values())


def test_forget_gradient_does_not_depend_on_batching(sample_task: UnlearningTask) -> None:
    whole = forget_gradient(sample_task.original, sample_task.forget, batch_size=10_000, device=CPU)
    pieces = forget_gradient(sample_task.original, sample_task.forget, batch_size=7, device=CPU)
    assert all(torch.allclose(whole[k], pieces[k], atol=1e-6) for k in whole)


def test_salun_changes_only_salient_weights(sample_task: UnlearningTask) -> None:
    before = dict(sample_task.original.named_parameters())
    gradients = forget_gradient(sample_task.original, sample_task.forget, batch_size=64, device=CPU)
    mask = saliency_mask(gradients, 0.5)
    model = run_method("salun", sample_task).model
    kept = changed = salient = 0
    for name, p in model.named_parameters():
        moved = p.detach() != before[name].detach()
        kept += int((~moved[mask[name] == 0]).sum())
        changed += int(moved[mask[name] == 1].sum())
        salient += int(mask[name].sum())
        assert not moved[mask[name] == 0].any(), name
    total = sum(p.numel() for p in model.parameters())
    assert kept == total - salient
    assert salient == pytest.approx(0.5 * total, rel=0.01)
    assert changed > 0.5 * salient


# --- early stopping: the step baselines may stop on ReMI's own check -----------------------------------

STEP_BASELINES = ("finetune", "neggrad_plus", "random_label", "salun")


def test_early_stop_ends_fine_tuning_once_the_forget_set_looks_like_the_hold_out(
        sample_task: UnlearningTask) -> None:
    budget = 20
    result = run_method("finetune", sample_task, parse_params("finetune", {"epochs": budget, "early_stop": "true"}))
    assert result.stop_reason.startswith("indistinguishable after epoch"), result.stop_reason
    stopped = int(result.stop_reason.rsplit(" ", 1)[1])
    assert 1 <= stopped < budget
    assert result.steps == stopped * math.ceil(len(sample_task.retain) / 64)
    full = run_method("finetune", sample_task, parse_params("finetune", {"epochs": budget}))
    assert full.stop_reason == f"completed {budget} epochs" and result.steps < full.steps


@pytest.mark.parametrize("method", STEP_BASELINES)
def test_early_stop_leaves_a_model_already_within_tolerance_alone(method: str, sample_task: UnlearningTask) -> None:
    loose = {"early_stop": "true", "auc_tolerance": 0.49, "accuracy_band": 99.0, "max_accuracy_drop": 99.0}
    result = run_method(method, sample_task, parse_params(method, loose))
    assert (result.steps, result.stop_reason) == (0, "already indistinguishable")
    assert _same_weights(_weights(result.model), _weights(sample_task.original))


def test_the_pair_loop_ends_when_its_epoch_check_says_so(sample_task: UnlearningTask) -> None:
    params = parse_params("neggrad_plus", {"epochs": 5, "batch_size": 50})
    model = copy.deepcopy(sample_task.original)
    steps = train_on_pairs(model, sample_task, sample_task.forget, params,
                           lambda net, _, retain: F.cross_entropy(net(retain[0]), retain[1]),
                           generator=torch.Generator().manual_seed(0), what="test loss", on_epoch=lambda e: e == 1)
    assert steps == 2 * math.ceil(len(sample_task.forget) / 50)


def test_epoch_stop_ends_at_the_best_point_it_saw(sample_task: UnlearningTask) -> None:
    model = copy.deepcopy(sample_task.original)
    stop = EpochStop(model, sample_task, StopTolerances())
    before = _weights(model)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(10 * torch.randn_like(parameter))  # an "epoch" that wrecks the model
    assert stop(0) is False and stop.epochs == 1
    assert stop.finish(budget=1) == "budget of 1 epochs; best after epoch 0"
    assert _same_weights(_weights(model), before)
