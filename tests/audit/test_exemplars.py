"""The test images a server lends an audit: what it picks, how they travel, what a node keeps and refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedunlearn.common.audit.exemplars import Exemplars, exemplars_from_record, exemplars_record
from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import RequestError
from fedunlearn.common.models import ModelSpec, build_model
from fedunlearn.server.references import MAX_CLASS_EXEMPLARS, ReferenceModels, lent_exemplars

SPEC = ModelSpec("mlp", 1, 8, 10)
SHAPE = (1, 8, 8)


def _test_split(n: int) -> LabeledData:
    return LabeledData(torch.randn(n, *SHAPE), torch.arange(n) % 10, torch.arange(n) + 5000)


def _references(count: int) -> ReferenceModels:
    states = tuple(build_model(SPEC, seed=k).state_dict() for k in range(count))
    return ReferenceModels(states=states, digest="d" * 64, train_size=10, epochs=1, seconds=0.0)


def test_the_server_lends_only_the_forgotten_classes_capped_with_each_references_view() -> None:
    test = _test_split(10 * (MAX_CLASS_EXEMPLARS + 50))
    lent = lent_exemplars(test, _references(3), SPEC, classes=(3, 7), limit=MAX_CLASS_EXEMPLARS, seed=0,
                          device=torch.device("cpu"))
    assert len(lent) == MAX_CLASS_EXEMPLARS and set(lent.data.y.tolist()) == {3, 7}
    assert lent.statistic is not None and lent.statistic.shape == (3, MAX_CLASS_EXEMPLARS)
    first = build_model(SPEC, seed=0).eval()
    with torch.no_grad():
        logits = first(lent.data.x[:4]).double()
    picked = logits[torch.arange(4), lent.data.y[:4]]
    others = logits.clone()
    others[torch.arange(4), lent.data.y[:4]] = -torch.inf
    # the same logit confidence a node computes on its own samples (client/calibration.py)
    np.testing.assert_allclose(lent.statistic[0, :4], (picked - torch.logsumexp(others, dim=1)).numpy(), rtol=1e-5)
    few = lent_exemplars(_test_split(40), None, SPEC, classes=(1,), limit=MAX_CLASS_EXEMPLARS, seed=0,
                         device=torch.device("cpu"))
    assert len(few) == 4 and few.statistic is None
    every = lent_exemplars(test, None, SPEC, classes=None, limit=300, seed=1, device=torch.device("cpu"))
    assert len(every) == 300 and len(set(every.data.y.tolist())) == 10  # a sample phase's loan: any class


def test_exemplars_travel_as_an_array_record_and_a_node_keeps_its_own_classes() -> None:
    data = _test_split(30)
    sent = Exemplars(data, np.arange(60.0).reshape(2, 30))
    got = exemplars_from_record(exemplars_record(sent), input_shape=SHAPE, num_classes=10)
    torch.testing.assert_close(got.data.x, data.x)
    assert got.data.y.tolist() == data.y.tolist() and got.data.ids.tolist() == data.ids.tolist()
    mine = got.of_classes((2,))
    assert mine.data.y.tolist() == [2, 2, 2]
    np.testing.assert_allclose(mine.calibration().statistic, sent.statistic[:, [2, 12, 22]])  # type: ignore[index]
    assert not mine.calibration().inside.any()
    without = exemplars_from_record(exemplars_record(Exemplars(data, None)), input_shape=SHAPE, num_classes=10)
    with pytest.raises(RequestError, match="without the references' statistics"):
        without.calibration()


def test_a_sample_audit_keeps_the_largest_share_in_its_forget_sets_class_mix() -> None:
    labels = torch.tensor([0] * 40 + [1] * 60 + [2] * 30 + [3] * 70)
    lent = Exemplars(LabeledData(torch.randn(200, *SHAPE), labels, torch.arange(200)), np.arange(400.0).reshape(2, 200))
    forget = torch.tensor([0] * 10 + [1] * 30 + [3] * 20)  # 1:3:0:2; class 1 runs out first (60 for 30 wanted)
    kept = lent.like(forget)
    assert torch.bincount(kept.data.y, minlength=4).tolist() == [20, 60, 0, 40]
    assert kept.data.ids.tolist() == [*range(20), *range(40, 100), *range(130, 170)]  # the first of each class
    np.testing.assert_allclose(kept.calibration().statistic, lent.statistic[:, kept.data.ids.numpy()])  # type: ignore[index]
    assert len(lent.like(torch.tensor([0, 4]))) == 0  # no exemplar of class 4: no mix can be matched
    assert len(lent.like(torch.tensor([], dtype=torch.int64))) == 0


@pytest.mark.parametrize(("exemplars", "match"), [
    (Exemplars(LabeledData(torch.randn(4, 1, 6, 6), torch.zeros(4, dtype=torch.int64), torch.arange(4)), None),
     "do not fit this node's"),
    (Exemplars(LabeledData(torch.randn(4, *SHAPE), torch.full((4,), 12), torch.arange(4)), None),
     "outside 0..9"),
    (Exemplars(LabeledData(torch.full((4, *SHAPE), float("nan")), torch.zeros(4, dtype=torch.int64),
                           torch.arange(4)), None), "NaN or Inf"),
    (Exemplars(LabeledData(torch.randn(4, *SHAPE), torch.zeros(4, dtype=torch.int64), torch.arange(4)),
               np.full((2, 4), np.inf)), "NaN or Inf"),
])
def test_a_node_refuses_exemplars_that_do_not_fit_its_data(exemplars: Exemplars, match: str) -> None:
    with pytest.raises(RequestError, match=match):
        exemplars_from_record(exemplars_record(exemplars), input_shape=SHAPE, num_classes=10)


def test_a_record_with_mismatched_parts_is_malformed() -> None:
    record = exemplars_record(Exemplars(_test_split(5), np.zeros((2, 5))))
    record["statistic"] = exemplars_record(Exemplars(_test_split(3), np.zeros((2, 3))))["statistic"]
    with pytest.raises(RequestError, match="malformed class exemplars"):
        exemplars_from_record(record, input_shape=SHAPE, num_classes=10)
    del record["y"]
    with pytest.raises(RequestError, match="malformed class exemplars"):
        exemplars_from_record(record, input_shape=SHAPE, num_classes=10)
