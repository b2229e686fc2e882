"""Stem features kept for the last stem: reused while only neck and head change, recomputed when the stem
does, and a model scored through them scores as it does on raw images."""

from __future__ import annotations

import pytest
import torch

from fedunlearn.common import stem_features
from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.models import ModelSpec, build_model
from fedunlearn.common.stem_features import StemCache
from fedunlearn.common.training import accuracy
from fedunlearn.server.evaluation import CentralEvaluator

SPEC = ModelSpec("cnn", 1, 8, 10)
CPU = torch.device("cpu")


def _images(n: int = 300) -> LabeledData:
    generator = torch.Generator().manual_seed(0)
    return LabeledData(torch.randn(n, 1, 8, 8, generator=generator), torch.randint(0, 10, (n,), generator=generator),
                       torch.arange(n))


def test_features_are_reused_for_the_same_stem_and_recomputed_for_another() -> None:
    data, model = _images(), build_model(SPEC, seed=0)
    cache = StemCache(data, CPU)
    first = cache.features(model)
    with torch.no_grad():
        assert torch.allclose(first.x, model.stem(data.x), atol=1e-6)
        model.head.weight.add_(1.0)  # the top changes: the stem's features stand
        assert cache.features(model) is first
        next(model.stem.parameters()).add_(1.0)  # the stem changes: computed again
        changed = cache.features(model)
        assert changed is not first and torch.allclose(changed.x, model.stem(data.x), atol=1e-6)
    assert torch.equal(changed.y, data.y) and torch.equal(changed.ids, data.ids)


def test_the_evaluator_scores_through_cached_stems_as_on_raw_images(monkeypatch: pytest.MonkeyPatch) -> None:
    passes: list[int] = []
    real = stem_features.stem_features
    monkeypatch.setattr(stem_features, "stem_features", lambda *a, **k: passes.append(1) or real(*a, **k))
    data = _images()
    evaluator = CentralEvaluator(SPEC, data, CPU)
    for seed in (0, 1):  # two stems, one after the other
        model = build_model(SPEC, seed=seed)
        for _ in range(2):  # the second time only the head differs: the stem's features are reused
            state = model.state_dict()
            assert evaluator.ta(state) == accuracy(model, data, device=CPU)
            kept = data.where_classes((3, 4), keep=False)
            assert evaluator.ta(state, (4, 3)) == accuracy(model, kept, device=CPU)
            with torch.no_grad():
                model.head.bias.add_(0.5)
    assert len(passes) == 2  # one stem pass per stem, for four models and eight scores
