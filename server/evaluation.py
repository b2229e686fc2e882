"""Server-side accuracy: the federation's ``ta`` on the test split, and a validation accuracy on data
the server holds, measured without any client's data.

For class forgetting both cover the classes that stay (a model that forgot
class k is right to fail on it), matching the centralized benchmark. The
validation split steers the unlearning phase (how much of the unlearning step
the global model takes); ``ta`` only judges, so the gate never grades a model
on the samples that shaped it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from common.checkpoint import state_sha256
from common.data.splits import federation_pool
from common.data.tensors import LabeledData
from common.models import ModelSpec, build_model
from common.training import accuracy
from server.aggregate import State

__all__ = ["VALIDATION_SIZE", "CentralEvaluator", "server_validation"]

VALIDATION_SIZE = 2_000  # a paired accuracy difference on 2,000 samples is good to about half a point


def server_validation(train: LabeledData, train_size: int | None, seed: int) -> LabeledData | None:
    """Up to ``VALIDATION_SIZE`` samples of the training split that no client holds (None when the
    federation holds all of it)."""
    _, public = federation_pool(train, train_size, seed)
    if len(public) == 0:
        return None
    order = torch.randperm(len(public), generator=torch.Generator().manual_seed(seed + 1))
    return public.subset(order[:VALIDATION_SIZE])


@dataclass(frozen=True)
class CentralEvaluator:
    """Accuracies of a state, remembered by its weights' hash: the unlearning phase asks
    again about models it has already scored (the original, the gate's candidate)."""

    spec: ModelSpec
    test: LabeledData
    device: torch.device
    validation: LabeledData | None = None
    _seen: dict[tuple[str, str, tuple[int, ...]], float] = field(default_factory=dict, repr=False)

    def ta(self, state: State, forgotten_classes: Sequence[int] = ()) -> float:
        """Test accuracy (percent): what the gate and the report judge by."""
        return self._accuracy("test", self.test, state, forgotten_classes)

    def validation_accuracy(self, state: State, forgotten_classes: Sequence[int] = ()) -> float | None:
        """Accuracy (percent) on the server's validation split, or None when it has none."""
        if self.validation is None:
            return None
        return self._accuracy("validation", self.validation, state, forgotten_classes)

    def _accuracy(self, split: str, data: LabeledData, state: State, forgotten_classes: Sequence[int]) -> float:
        key = (split, state_sha256(state), tuple(sorted(forgotten_classes)))
        if key not in self._seen:
            if key[2]:
                data = data.subset(~torch.isin(data.y, torch.tensor(list(key[2]), dtype=torch.int64)))
            model = build_model(self.spec, seed=0)
            model.load_state_dict(dict(state))
            self._seen[key] = accuracy(model.to(self.device), data, device=self.device)
        return self._seen[key]
