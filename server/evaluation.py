"""Server-side test accuracy: the federation's ``ta``, measured without any client's data.

For class forgetting ``ta`` covers the classes that stay (a model that forgot
class k is right to fail on it), matching the centralized benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from common.data.tensors import LabeledData
from common.models import ModelSpec, build_model
from common.training import accuracy
from server.aggregate import State

__all__ = ["CentralEvaluator"]


@dataclass(frozen=True)
class CentralEvaluator:
    spec: ModelSpec
    test: LabeledData
    device: torch.device

    def ta(self, state: State, forgotten_classes: Sequence[int] = ()) -> float:
        data = self.test
        if forgotten_classes:
            data = data.subset(~torch.isin(data.y, torch.tensor(list(forgotten_classes), dtype=torch.int64)))
        model = build_model(self.spec, seed=0)
        model.load_state_dict(dict(state))
        return accuracy(model.to(self.device), data, device=self.device)
