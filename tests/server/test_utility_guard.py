"""The server takes only as much of an unlearning step as keeps its validation accuracy near the original."""

from __future__ import annotations

import pytest
import torch

from common.data.datasets import load_dataset
from common.models import ModelSpec, build_model
from common.training import TrainConfig, train
from server.aggregate import train_and_forget_update
from server.evaluation import CentralEvaluator, server_validation
from server.utility_guard import STEP_SHARES, UtilityGuard


@pytest.fixture(scope="module")
def trained() -> tuple[CentralEvaluator, dict[str, torch.Tensor]]:
    bundle = load_dataset("digits")
    spec = ModelSpec("mlp", 1, 8, bundle.num_classes)
    validation = server_validation(bundle.train, 800, seed=0)
    assert validation is not None and len(validation) == len(bundle.train) - 800
    model = build_model(spec, seed=0)
    train(model, bundle.train.subset(torch.arange(800)), TrainConfig(epochs=15, lr=3e-3),
          device=torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    evaluator = CentralEvaluator(spec, bundle.test, torch.device("cpu"), validation=validation)
    return evaluator, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _damaged(state: dict[str, torch.Tensor], how_much: float) -> dict[str, torch.Tensor]:
    """The state with every float array pushed by random noise of scale ``how_much``."""
    generator = torch.Generator().manual_seed(1)
    return {k: v + how_much * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
            for k, v in state.items()}


def test_a_harmless_step_is_taken_in_full(trained) -> None:
    evaluator, state = trained
    guard = UtilityGuard.for_phase(evaluator, state, (), allowed_drop=1.0)
    assert guard.anchor is not None and guard.anchor > 80  # the model is worth protecting
    merged, share = guard.combine(state, [], [(_damaged(state, 1e-4), 10.0)], combine="sum")
    assert share == 1.0
    assert evaluator.validation_accuracy(merged) == pytest.approx(guard.anchor, abs=1.0)


def test_a_harmful_step_is_cut_to_the_largest_share_within_the_drop(trained) -> None:
    evaluator, state = trained
    guard = UtilityGuard.for_phase(evaluator, state, (), allowed_drop=1.0)
    harmful = _damaged(state, 0.3)
    assert guard.anchor - evaluator.validation_accuracy(harmful) > 10  # the full step wrecks the model
    merged, share = guard.combine(state, [], [(harmful, 10.0)], combine="sum")
    assert share < 1.0
    assert guard.anchor - evaluator.validation_accuracy(merged) <= 1.0
    larger = STEP_SHARES[STEP_SHARES.index(share) - 1]  # the next larger share was over the drop
    bigger = train_and_forget_update(state, [], [(harmful, 10.0)], combine="sum", scale=larger)
    assert guard.anchor - evaluator.validation_accuracy(bigger) > 1.0


def test_share_zero_is_plain_fedavg_of_the_training(trained) -> None:
    evaluator, state = trained
    guard = UtilityGuard.for_phase(evaluator, state, (), allowed_drop=1.0)
    wrecked = {k: torch.zeros_like(v) if v.is_floating_point() else v for k, v in state.items()}
    wrecked = _damaged(wrecked, 5.0)
    merged, share = guard.combine(state, [(state, 1.0)], [(wrecked, 10.0)], combine="sum")
    assert share == 0.0
    assert all(torch.equal(merged[k], state[k]) for k in state)


def test_without_validation_data_every_step_is_taken_in_full(trained) -> None:
    evaluator, state = trained
    blind = CentralEvaluator(evaluator.spec, evaluator.test, torch.device("cpu"))
    guard = UtilityGuard.for_phase(blind, state, (), allowed_drop=1.0)
    assert guard.anchor is None
    _, share = guard.combine(state, [], [(_damaged(state, 0.3), 10.0)], combine="sum")
    assert share == 1.0


def test_a_federation_holding_the_whole_split_leaves_no_validation() -> None:
    bundle = load_dataset("digits")
    assert server_validation(bundle.train, None, seed=0) is None
