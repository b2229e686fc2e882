"""The non-member reference a forget set must come to resemble, per granularity."""

from __future__ import annotations

import pytest
import torch

from fedunlearn.common.data.forget import parse_forget_spec
from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import DataError
from fedunlearn.common.unlearning.reference import build_reference, build_utility


def _holdout(labels: list[int]) -> LabeledData:
    n = len(labels)
    x = torch.arange(n * 4, dtype=torch.float32).view(n, 1, 2, 2)
    return LabeledData(x, torch.tensor(labels, dtype=torch.int64), torch.arange(100, 100 + n))


def test_sample_granularity_returns_the_holdout_unchanged() -> None:
    holdout = _holdout([0, 1, 2, 0, 1, 2])
    reference = build_reference(holdout, "sample")
    assert torch.equal(reference.x, holdout.x)
    assert torch.equal(reference.y, holdout.y)
    assert torch.equal(reference.ids, holdout.ids)


def test_sample_granularity_ignores_forgotten_classes() -> None:
    holdout = _holdout([0, 1, 2, 0])
    assert torch.equal(build_reference(holdout, "sample", (1,)).y, holdout.y)


def test_class_granularity_drops_the_class_and_relabels_the_rest() -> None:
    holdout = _holdout([0, 1, 2, 0, 1, 2, 3])
    reference = build_reference(holdout, "class", (1,))
    keep = holdout.y != 1
    assert torch.equal(reference.ids, holdout.ids[keep])  # same samples, in order...
    assert torch.equal(reference.x, holdout.x[keep])
    assert reference.y.dtype == torch.int64
    assert torch.equal(reference.y, torch.ones(int(keep.sum()), dtype=torch.int64))  # ...all labelled 1


def test_class_granularity_does_not_touch_the_holdout() -> None:
    holdout = _holdout([0, 1, 2, 0, 1, 2])
    before = holdout.y.clone()
    build_reference(holdout, "class", (2,))
    assert torch.equal(holdout.y, before)


def test_several_forgotten_classes_share_the_relabelled_samples() -> None:
    holdout = _holdout([0, 1, 2, 3] * 100)
    reference = build_reference(holdout, "class", (0, 2), seed=0)
    assert torch.equal(reference.ids, holdout.ids[(holdout.y == 1) | (holdout.y == 3)])
    assert set(reference.y.tolist()) == {0, 2}
    share = float((reference.y == 0).float().mean())
    assert 0.35 < share < 0.65  # drawn evenly


def test_class_relabelling_is_seeded() -> None:
    holdout = _holdout([0, 1, 2, 3] * 50)
    first = build_reference(holdout, "class", (0, 2), seed=3)
    assert torch.equal(first.y, build_reference(holdout, "class", (0, 2), seed=3).y)
    assert not torch.equal(first.y, build_reference(holdout, "class", (0, 2), seed=4).y)


@pytest.mark.parametrize("granularity", ["sample", "class"])
def test_empty_holdout_is_a_data_error(granularity: str) -> None:
    empty = _holdout([0]).subset(torch.zeros(1, dtype=torch.bool))
    with pytest.raises(DataError, match="hold-out"):
        build_reference(empty, granularity, (0,))  # type: ignore[arg-type]


def test_class_granularity_without_a_class_is_a_data_error() -> None:
    with pytest.raises(DataError, match="class"):
        build_reference(_holdout([0, 1, 2]), "class", ())


def test_holdout_of_only_forgotten_classes_is_a_data_error() -> None:
    with pytest.raises(DataError, match="forgotten"):
        build_reference(_holdout([1, 1, 2]), "class", (1, 2))


def test_utility_set_keeps_true_labels_of_the_classes_that_stay() -> None:
    """ReMI's utility guard must watch the remaining classes with their own labels, and for
    sample forgetting defer to the reference (the hold-out itself)."""
    holdout = LabeledData(torch.zeros(6, 1, 2, 2), torch.tensor([0, 1, 2, 1, 0, 2]), torch.arange(6))
    kept = build_utility(holdout, "class", parse_forget_spec("class:1").forgotten_classes)
    assert kept is not None
    assert kept.y.tolist() == [0, 2, 0, 2] and kept.ids.tolist() == [0, 2, 4, 5]
    assert build_utility(holdout, "sample", parse_forget_spec("random:0.5").forgotten_classes) is None
