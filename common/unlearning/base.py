"""The one interface every unlearning method implements.

A method receives an ``UnlearningTask`` (the original model and the data it
may use) plus its own typed hyper-parameters, and returns an ``Outcome``.
``run_method`` wraps every method the same way: it validates the
hyper-parameters before any work, hands the method a private copy of the
original, times it and refuses non-finite weights.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import ConfigError, NonFiniteError
from fedunlearn.common.models import Classifier, ModelSpec
from fedunlearn.common.registry import Registry
from fedunlearn.common.training import TrainConfig

__all__ = [
    "METHODS",
    "Granularity",
    "MethodEntry",
    "Outcome",
    "TracePoint",
    "UnlearningResult",
    "UnlearningTask",
    "parse_params",
    "register_method",
    "run_method",
]

Granularity = Literal["sample", "class"]


@dataclass(frozen=True)
class UnlearningTask:
    """What a method may use. It must not modify any of these (it gets its own model copy).

    original:  the trained model requests are made against
    retain:    training samples that stay
    forget:    training samples to forget
    reference: non-members labelled as the forget set should come to look
               (hold-out samples for sample forgetting; for class forgetting,
               samples of other classes labelled with the forgotten class)
    recipe:    how the original was trained (retrain repeats it)
    utility:   non-members with their true labels, of the classes that stay, to
               watch that unlearning keeps the primary task; None means the
               reference (right for sample granularity)
    expected_confidence: sample id -> the mean logit confidence that reference
               models which never trained on the sample give it (the audit's
               references, where a federation has them). A method may measure
               membership as the excess over it, so that an easy sample is not
               mistaken for a remembered one; None: unknown
    """

    original: Classifier
    spec: ModelSpec
    retain: LabeledData
    forget: LabeledData
    reference: LabeledData
    recipe: TrainConfig
    granularity: Granularity
    device: torch.device
    seed: int
    utility: LabeledData | None = None
    expected_confidence: Mapping[int, float] | None = None

    @property
    def utility_set(self) -> LabeledData:
        return self.utility if self.utility is not None else self.reference


@dataclass(frozen=True)
class TracePoint:
    """One audit of an iterative method's progress (plotted and reported)."""

    step: int
    forget_accuracy: float
    reference_accuracy: float
    retain_accuracy: float
    utility_accuracy: float
    forget_auc: float


@dataclass(frozen=True)
class Outcome:
    """What a method function returns; ``run_method`` adds the timing."""

    model: Classifier
    steps: int
    stop_reason: str
    trace: tuple[TracePoint, ...] = ()


@dataclass(frozen=True)
class UnlearningResult:
    method: str
    params: Mapping[str, Any]
    model: Classifier
    seconds: float
    steps: int
    stop_reason: str
    trace: tuple[TracePoint, ...] = field(default=())


MethodFn = Callable[[Classifier, UnlearningTask, Any], Outcome]


@dataclass(frozen=True)
class MethodEntry:
    """needs_retain: False for methods that can work from forget + non-member data alone
    (a client leaving the federation holds no retain data of its own)."""

    params_type: type
    run: MethodFn
    needs_retain: bool = True


METHODS: Registry[MethodEntry] = Registry("unlearning method")


def register_method(
    name: str, params_type: type, *, needs_retain: bool = True
) -> Callable[[MethodFn], MethodFn]:
    """``@register_method("finetune", FinetuneParams)`` on ``fn(model, task, params)``."""

    def add(fn: MethodFn) -> MethodFn:
        METHODS.add(name, MethodEntry(params_type, fn, needs_retain))
        return fn

    return add


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """Coerce a CLI string or TOML value to the field's type, or say what was expected."""
    if typing.get_origin(annotation) is Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise ConfigError(f"{where} must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if annotation is bool:
        text = str(value).lower()
        if text not in ("true", "false", "1", "0"):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return text in ("true", "1")
    if annotation in (int, float):
        try:
            number = float(value) if not isinstance(value, bool) else float("nan")
        except (TypeError, ValueError):
            number = float("nan")
        if annotation is int and not (math.isfinite(number) and number.is_integer()):
            raise ConfigError(f"{where} must be a whole number, got {value!r}")
        if math.isnan(number):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return int(number) if annotation is int else number
    if annotation is str:
        return str(value)
    return value


def parse_params(method: str, overrides: Mapping[str, Any]) -> Any:
    """Build the method's params dataclass from defaults plus overrides (strings allowed).

    Unknown keys and out-of-range values are ConfigErrors naming ``method.key``.
    """
    params_type = METHODS.get(method).params_type
    fields = {f.name: f for f in dataclasses.fields(params_type)}
    hints = typing.get_type_hints(params_type)
    values = {}
    for key, value in overrides.items():
        if key not in fields:
            valid = ", ".join(fields) or "(none)"
            raise ConfigError(f"unknown hyper-parameter {method}.{key}; valid: {valid}")
        values[key] = _convert(value, hints[key], f"{method}.{key}")
    try:
        return params_type(**values)
    except ConfigError as exc:
        raise ConfigError(f"{method}: {exc}") from None


def _check_finite_weights(model: Classifier, method: str) -> None:
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise NonFiniteError(f"{method} produced non-finite weights in {name}; nothing was kept")


def run_method(name: str, task: UnlearningTask, params: Any | None = None) -> UnlearningResult:
    """Run one registered method on a private copy of ``task.original``."""
    entry = METHODS.get(name)
    params = params if params is not None else parse_params(name, {})
    if not isinstance(params, entry.params_type):
        raise ConfigError(f"{name} expects {entry.params_type.__name__}, got {type(params).__name__}")
    if len(task.forget) == 0:
        raise ConfigError("the forget set is empty: nothing to unlearn")
    if len(task.retain) == 0 and entry.needs_retain:
        raise ConfigError(
            f"{name} needs retain data, but the forget set covers all of it (a leaving client); "
            f"methods that work without: {', '.join(n for n in METHODS.names() if not METHODS.get(n).needs_retain)}"
        )
    model = copy.deepcopy(task.original).to(task.device)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(task.seed)  # dropout and other global-RNG users stay reproducible
        outcome = entry.run(model, task, params)
    if task.device.type == "cuda":
        torch.cuda.synchronize(task.device)
    seconds = time.perf_counter() - start
    outcome.model.eval()
    _check_finite_weights(outcome.model, name)
    return UnlearningResult(
        method=name,
        params=dataclasses.asdict(typing.cast(Any, params)),
        model=outcome.model,
        seconds=seconds,
        steps=outcome.steps,
        stop_reason=outcome.stop_reason,
        trace=outcome.trace,
    )
