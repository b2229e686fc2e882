"""Server-side test accuracy: the federation's ``ta``, measured without any client's data.

For class forgetting ``ta`` covers the classes that stay (a model that forgot
class k is right to fail on it), matching the centralized benchmark. The same
evaluator on validation images no client holds (``validation_evaluator``) lets
the unlearning phase size its steps without looking at the test split the gate
and the report use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from fedunlearn.common.checkpoint import state_sha256
from fedunlearn.common.data.splits import federation_pool
from fedunlearn.common.data.tensors import DatasetBundle, LabeledData
from fedunlearn.common.errors import ConfigError
from fedunlearn.common.models import ModelSpec, model_with_weights
from fedunlearn.common.scenario import Scenario
from fedunlearn.common.stem_features import StemCache
from fedunlearn.common.training import accuracy
from fedunlearn.server.aggregate import State

__all__ = ["VALIDATION_SIZE", "CentralEvaluator", "public_images", "validation_evaluator"]

VALIDATION_SIZE = 2000


@dataclass(frozen=True)
class CentralEvaluator:
    """Test accuracy of a state, remembered by its weights' hash: the unlearning phase asks
    again about models it has already scored (the original, the gate's candidate). The test images'
    stem features are kept for the last stem seen (``StemCache``): a phase's candidates often share it."""

    spec: ModelSpec
    test: LabeledData
    device: torch.device
    _seen: dict[tuple[str, tuple[int, ...]], float] = field(default_factory=dict, repr=False)
    _stems: StemCache = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_stems", StemCache(self.test, self.device))

    def ta(self, state: State, forgotten_classes: Sequence[int] = ()) -> float:
        key = (state_sha256(state), tuple(sorted(forgotten_classes)))
        if key not in self._seen:
            self._seen[key] = self._score(state, key[1])
        return self._seen[key]

    def _score(self, state: State, forgotten_classes: tuple[int, ...]) -> float:
        model = model_with_weights(self.spec, state).to(self.device)
        features = self._stems.features(model)
        if forgotten_classes:
            features = features.where_classes(forgotten_classes, keep=False)
        return accuracy(model.top(), features, device=self.device)


def validation_evaluator(scenario: Scenario, spec: ModelSpec, bundle: DatasetBundle,
                         device: torch.device) -> CentralEvaluator | None:
    """Accuracy on up to ``VALIDATION_SIZE`` training images no client holds, when the scenario's unlearning
    searches its step size (``UnlearningPlan.step_scales``); None otherwise."""
    if not scenario.unlearning.searches_steps:
        return None
    public = public_images(scenario, bundle, "step_scales")
    return CentralEvaluator(spec, public.subset(torch.arange(len(public))[:VALIDATION_SIZE]), device)


def public_images(scenario: Scenario, bundle: DatasetBundle, key: str) -> LabeledData:
    """The training images no client holds, in an order fixed by the scenario's seed: the validation images
    are the first ``VALIDATION_SIZE`` of them and the public fine-tuning takes those after, so the two never
    share an image. ``key`` names the [unlearning] setting that needs them, for the error."""
    _, public = federation_pool(bundle.train, scenario.data.train_size, scenario.seed)
    if len(public) == 0:
        raise ConfigError(f"[unlearning].{key} needs images no client holds, but the clients hold the whole "
                          "training split: set [data].train_size below it")
    return public.subset(torch.randperm(len(public), generator=torch.Generator().manual_seed(scenario.seed)))
