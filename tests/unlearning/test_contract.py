"""The contract every registered unlearning method keeps, run over the whole METHODS registry.

Each method runs cheaply: wherever its params type has a budget field (epochs, max_steps,
samples) the test shrinks it, discovered from the dataclass so new methods are covered too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from fedunlearn.common.errors import ConfigError
from fedunlearn.common.training import TrainConfig
from fedunlearn.common.unlearning import METHODS, UnlearningResult, UnlearningTask, parse_params, run_method

CPU = torch.device("cpu")
CHEAP = {"epochs": 1, "max_steps": 10, "samples": 64}
NAMES = METHODS.names()  # collected before any test registers a throwaway method


def _cheap_overrides(name: str) -> dict[str, Any]:
    fields = {f.name for f in dataclasses.fields(METHODS.get(name).params_type)}
    return {key: value for key, value in CHEAP.items() if key in fields}


@pytest.fixture(scope="module")
def cheap_task(sample_task: UnlearningTask) -> UnlearningTask:
    """The sample task with a two-epoch recipe, so retraining is cheap too."""
    return dataclasses.replace(sample_task, recipe=TrainConfig(epochs=2, batch_size=64, lr=2e-3))


@dataclass(frozen=True)
class Ran:
    name: str
    params: dict[str, Any]  # the parsed params, as a dict
    result: UnlearningResult


@pytest.fixture(scope="module", params=NAMES)
def ran(request: pytest.FixtureRequest, cheap_task: UnlearningTask) -> Ran:
    name = request.param
    before = {k: v.clone() for k, v in cheap_task.original.state_dict().items()}
    params = parse_params(name, _cheap_overrides(name))
    result = run_method(name, cheap_task, params)
    after = cheap_task.original.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), f"{name} modified the original"
    return Ran(name, dataclasses.asdict(params), result)


def test_result_names_the_method_and_its_parsed_params(ran: Ran) -> None:
    assert isinstance(ran.result, UnlearningResult)
    assert ran.result.method == ran.name
    assert dict(ran.result.params) == ran.params
    assert ran.params == dataclasses.asdict(parse_params(ran.name, _cheap_overrides(ran.name)))


def test_result_is_timed_and_described(ran: Ran) -> None:
    result = ran.result
    assert result.seconds > 0
    assert isinstance(result.steps, int) and result.steps >= 0
    assert isinstance(result.stop_reason, str) and result.stop_reason


def test_model_has_the_original_architecture_and_finite_weights(ran: Ran, cheap_task: UnlearningTask) -> None:
    name, model, original = ran.name, ran.result.model, cheap_task.original
    assert type(model) is type(original)
    assert model is not original
    assert not model.training
    weights, reference = model.state_dict(), original.state_dict()
    assert weights.keys() == reference.keys()
    for key, tensor in weights.items():
        assert tensor.shape == reference[key].shape, key
        assert tensor.dtype == reference[key].dtype, key
        assert tensor.device.type == cheap_task.device.type, key
        if tensor.is_floating_point():
            assert torch.isfinite(tensor).all(), f"{name}: {key}"
    with torch.no_grad():
        logits = model(cheap_task.forget.x[:4])
    assert logits.shape == (4, cheap_task.spec.num_classes)


@pytest.mark.parametrize("name", NAMES)
def test_defaults_parse_and_unknown_keys_are_refused(name: str) -> None:
    entry = METHODS.get(name)
    defaults = parse_params(name, {})
    assert isinstance(defaults, entry.params_type)
    assert dataclasses.is_dataclass(defaults)
    with pytest.raises(ConfigError, match=f"{name}.no_such_knob"):
        parse_params(name, {"no_such_knob": "1"})


def test_the_design_methods_are_registered() -> None:
    assert {"retrain", "remi", "finetune", "fisher", "salun"} <= set(NAMES)
