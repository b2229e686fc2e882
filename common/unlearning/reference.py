"""The non-member reference a forget set must come to resemble, per granularity.

Sample (and client) forgetting: hold-out samples the model never trained on,
with their true labels; a retrained model treats the forgotten samples exactly
like these.

Class forgetting: a model retrained without class k has never learned k, so
its view of a class-k sample is like its view of *any* sample scored against
a label it never learned. The reference is therefore hold-out samples of the
other classes, relabelled with the forgotten class: their membership statistic
for label k is what "never learned k" looks like. Hold-out samples of class k
itself would be the wrong target: the original model generalises to them.
"""

from __future__ import annotations

import torch

from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import DataError
from fedunlearn.common.unlearning.base import Granularity

__all__ = ["build_reference", "build_utility"]


def build_reference(
    holdout: LabeledData,
    granularity: Granularity,
    forgotten_classes: tuple[int, ...] = (),
    *,
    seed: int = 0,
) -> LabeledData:
    """Non-member samples labelled as the forget set should look after unlearning."""
    if len(holdout) == 0:
        raise DataError("the hold-out (non-member) set is empty; unlearning needs non-member samples")
    if granularity == "sample":
        return holdout
    if not forgotten_classes:
        raise DataError("class forgetting needs at least one forgotten class")
    classes = torch.tensor(forgotten_classes, dtype=torch.int64)
    others = holdout.where_classes(forgotten_classes, keep=False)
    if len(others) == 0:
        raise DataError("the hold-out set holds only forgotten classes; no reference can be built")
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, len(classes), (len(others),), generator=generator)
    return others.with_labels(classes[pick])


def build_utility(
    holdout: LabeledData, granularity: Granularity, forgotten_classes: tuple[int, ...] = ()
) -> LabeledData | None:
    """Hold-out samples of the classes that stay, with their true labels, to watch the task.

    None for sample forgetting, where the reference (the hold-out itself) already is that set.
    """
    if granularity == "sample":
        return None
    return holdout.where_classes(forgotten_classes, keep=False)
