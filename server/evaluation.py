"""Server-side test accuracy: the federation's ``ta``, measured without any client's data.

For class forgetting ``ta`` covers the classes that stay (a model that forgot
class k is right to fail on it), matching the centralized benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from fedunlearn.common.checkpoint import state_sha256
from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.models import ModelSpec, model_with_weights
from fedunlearn.common.training import accuracy
from fedunlearn.server.aggregate import State

__all__ = ["CentralEvaluator"]


@dataclass(frozen=True)
class CentralEvaluator:
    """Test accuracy of a state, remembered by its weights' hash: the unlearning phase asks
    again about models it has already scored (the original, the gate's candidate)."""

    spec: ModelSpec
    test: LabeledData
    device: torch.device
    _seen: dict[tuple[str, tuple[int, ...]], float] = field(default_factory=dict, repr=False)

    def ta(self, state: State, forgotten_classes: Sequence[int] = ()) -> float:
        key = (state_sha256(state), tuple(sorted(forgotten_classes)))
        if key not in self._seen:
            self._seen[key] = self._score(state, key[1])
        return self._seen[key]

    def _score(self, state: State, forgotten_classes: tuple[int, ...]) -> float:
        data = self.test
        if forgotten_classes:
            data = data.where_classes(forgotten_classes, keep=False)
        return accuracy(model_with_weights(self.spec, state).to(self.device), data, device=self.device)
