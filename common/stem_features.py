"""Samples seen through a model's stem, and a cache of them for models that share one stem.

The stem (convolutions, early layers) is most of a CNN's cost, and much of the work around unlearning
leaves it alone: ReMI's scope "top" adapts only neck and head, and an unlearning round without training
(``[unlearning].train_beside = false``) changes nothing else. Scoring or fine-tuning such models again and
again on one image set then only needs the stem's outputs once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fedunlearn.common.checkpoint import state_sha256
from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.models import Classifier
from fedunlearn.common.training import batched_forward

__all__ = ["StemCache", "stem_features"]


def stem_features(model: Classifier, data: LabeledData, device: torch.device, *,
                  keep_on_device: bool = False) -> LabeledData:
    """``data`` through ``model``'s stem (eval mode): the input ``model.top()`` takes, labels and ids kept."""
    return LabeledData(batched_forward(model.stem, data.x, device=device, keep_on_device=keep_on_device),
                       data.y, data.ids)


@dataclass
class StemCache:
    """One image set's stem features, kept for the last stem they were computed with (its weights' hash,
    buffers included), so that models sharing that stem skip it."""

    data: LabeledData
    device: torch.device
    _stem: str | None = field(default=None, init=False, repr=False)
    _features: LabeledData | None = field(default=None, init=False, repr=False)

    def features(self, model: Classifier) -> LabeledData:
        stem = state_sha256(model.stem.state_dict())
        if self._features is None or stem != self._stem:
            self._features, self._stem = stem_features(model, self.data, self.device), stem
        return self._features
