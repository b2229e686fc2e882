"""The one method interface: typed hyper-parameters from strings, and what run_method guarantees
whatever the method does (a private copy, timing, seeding, no empty sets, no NaN weights)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import pytest
import torch

from fedunlearn.common.errors import ConfigError, NonFiniteError, UnknownNameError
from fedunlearn.common.models import Classifier
from fedunlearn.common.unlearning.base import (
    METHODS,
    Outcome,
    UnlearningResult,
    UnlearningTask,
    parse_params,
    register_method,
    run_method,
)

# Throwaway methods registered by this module. The registry refuses duplicates and lives for
# the whole process, so registration is guarded and names are unlikely to clash.
TOY, NAN, RNG = "_test_base_toy", "_test_base_nan", "_test_base_rng"


@dataclass(frozen=True)
class ToyParams:
    steps: int = 1
    scale: float = 1.0
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    note: str = ""

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"steps must be >= 0, got {self.steps}")


@dataclass(frozen=True)
class NoParams:
    pass


calls: list[str] = []


def _toy(model: Classifier, task: UnlearningTask, params: ToyParams) -> Outcome:
    """Moves every weight in place and leaves the model in training mode."""
    calls.append(TOY)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(params.scale)
    model.train()
    return Outcome(model, params.steps, "toy done")


def _nan(model: Classifier, task: UnlearningTask, params: NoParams) -> Outcome:
    with torch.no_grad():
        next(iter(model.parameters())).fill_(float("nan"))
    return Outcome(model, 1, "ruined")


def _rng(model: Classifier, task: UnlearningTask, params: NoParams) -> Outcome:
    """Reports a draw from the global RNG, the one dropout and torch.randn use."""
    return Outcome(model, 0, repr(torch.rand(4).tolist()))


@pytest.fixture(scope="module", autouse=True)
def _throwaway_methods() -> None:
    for name, params_type, fn in ((TOY, ToyParams, _toy), (NAN, NoParams, _nan), (RNG, NoParams, _rng)):
        if name not in METHODS:
            register_method(name, params_type)(fn)


def _weights(model: Classifier) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- parse_params ----------------------------------------------------------------------------------


def test_strings_become_the_field_types() -> None:
    params = parse_params(TOY, {"steps": "3", "scale": "0.5", "flag": "true", "mode": "b", "note": 7})
    assert params == ToyParams(steps=3, scale=0.5, flag=True, mode="b", note="7")
    assert type(params.steps) is int and type(params.scale) is float and params.flag is True


@pytest.mark.parametrize(("text", "value"), [("true", True), ("True", True), ("1", True), ("false", False),
                                             ("FALSE", False), ("0", False), (True, True), (False, False)])
def test_booleans(text: object, value: bool) -> None:
    assert parse_params(TOY, {"flag": text}).flag is value


def test_native_values_pass_and_whole_floats_are_ints() -> None:
    params = parse_params(TOY, {"steps": 4.0, "scale": 2})
    assert params.steps == 4 and type(params.steps) is int
    assert params.scale == 2.0 and type(params.scale) is float


def test_no_overrides_gives_the_defaults() -> None:
    assert parse_params(TOY, {}) == ToyParams()


@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        ({"steps": "2.5"}, f"{TOY}.steps"),
        ({"steps": "two"}, f"{TOY}.steps"),
        ({"steps": "inf"}, f"{TOY}.steps"),
        ({"scale": "abc"}, f"{TOY}.scale"),
        ({"scale": "nan"}, f"{TOY}.scale"),
        ({"scale": True}, f"{TOY}.scale"),
        ({"flag": "maybe"}, f"{TOY}.flag"),
        ({"mode": "c"}, f"{TOY}.mode"),
    ],
)
def test_malformed_values_are_config_errors_naming_the_key(overrides: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        parse_params(TOY, overrides)


def test_literal_error_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="a, b"):
        parse_params(TOY, {"mode": "c"})


def test_unknown_key_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as excinfo:
        parse_params(TOY, {"stepz": "1"})
    message = str(excinfo.value)
    assert f"{TOY}.stepz" in message
    for field in dataclasses.fields(ToyParams):
        assert field.name in message


def test_unknown_key_of_a_method_without_params() -> None:
    with pytest.raises(ConfigError, match="none"):
        parse_params(NAN, {"anything": "1"})


def test_range_errors_from_the_dataclass_name_the_method() -> None:
    with pytest.raises(ConfigError, match=f"{TOY}.*steps must be >= 0"):
        parse_params(TOY, {"steps": "-1"})


def test_unknown_method_lists_the_registered_ones() -> None:
    with pytest.raises(UnknownNameError) as excinfo:
        parse_params("no_such_method", {})
    for name in ("retrain", "remi", TOY):
        assert name in str(excinfo.value)


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(ValueError, match=TOY):
        register_method(TOY, ToyParams)(_toy)
    assert METHODS.get(TOY).run is _toy


# --- run_method ------------------------------------------------------------------------------------


def test_result_carries_the_outcome_timing_and_params(sample_task: UnlearningTask) -> None:
    params = parse_params(TOY, {"steps": "5", "scale": "0.1"})
    result = run_method(TOY, sample_task, params)
    assert isinstance(result, UnlearningResult)
    assert result.method == TOY
    assert result.params == dataclasses.asdict(params)
    assert result.steps == 5 and result.stop_reason == "toy done"
    assert result.seconds > 0
    assert not result.model.training  # handed back ready for evaluation


def test_default_params_are_used_when_none_are_given(sample_task: UnlearningTask) -> None:
    assert run_method(TOY, sample_task).params == dataclasses.asdict(ToyParams())


def test_the_original_is_never_modified(sample_task: UnlearningTask) -> None:
    before = _weights(sample_task.original)
    result = run_method(TOY, sample_task)
    assert _same_weights(before, _weights(sample_task.original))
    assert result.model is not sample_task.original
    assert not _same_weights(before, _weights(result.model))


def test_params_of_another_method_are_refused(sample_task: UnlearningTask) -> None:
    with pytest.raises(ConfigError, match="ToyParams"):
        run_method(TOY, sample_task, NoParams())


@pytest.mark.parametrize("emptied", ["forget", "retain"])
def test_empty_forget_or_retain_set_is_refused_before_the_method_runs(
    emptied: str, sample_task: UnlearningTask
) -> None:
    data = getattr(sample_task, emptied)
    nothing = data.subset(torch.zeros(len(data), dtype=torch.bool))
    task = dataclasses.replace(sample_task, **{emptied: nothing})
    calls.clear()
    with pytest.raises(ConfigError, match="forget set"):
        run_method(TOY, task)
    assert calls == []


def test_non_finite_weights_are_refused(sample_task: UnlearningTask) -> None:
    before = _weights(sample_task.original)
    with pytest.raises(NonFiniteError, match=NAN):
        run_method(NAN, sample_task)
    assert _same_weights(before, _weights(sample_task.original))


def test_methods_see_a_global_rng_seeded_by_the_task(sample_task: UnlearningTask) -> None:
    first, again = run_method(RNG, sample_task), run_method(RNG, sample_task)
    assert first.stop_reason == again.stop_reason
    reseeded = run_method(RNG, dataclasses.replace(sample_task, seed=sample_task.seed + 1))
    assert reseeded.stop_reason != first.stop_reason


def test_run_method_leaves_the_callers_rng_alone(sample_task: UnlearningTask) -> None:
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    run_method(RNG, sample_task)
    assert torch.equal(torch.rand(3), expected)
