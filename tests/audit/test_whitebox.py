"""White-box checks on models and features whose membership is known by construction."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from fedunlearn.common.audit.whitebox import (
    ProbeLayer,
    gradient_norm_attack,
    gradient_norms,
    linear_probe,
    relearn_epochs,
)
from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import ConfigError
from fedunlearn.common.models import Classifier, ModelSpec, build_model
from fedunlearn.common.training import TrainConfig, train

CPU = torch.device("cpu")


def _noise(n: int, seed: int, *, side: int = 8, shift: float = 0.0) -> LabeledData:
    """n Gaussian 1 x side x side images with random labels in 0..2: only memorising can fit them."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, side, side, generator=generator) + shift
    return LabeledData(x, torch.randint(0, 3, (n,), generator=generator), torch.arange(n))


def _trained(data: LabeledData, *, epochs: int, seed: int = 0) -> Classifier:
    model = build_model(ModelSpec("mlp", 1, data.x.shape[-1], 3), seed=seed)
    train(model, data, TrainConfig(epochs=epochs, batch_size=32, lr=1e-3), device=CPU,
          generator=torch.Generator().manual_seed(seed))
    return model


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


MEMBERS, NONMEMBERS, OTHERS = _noise(100, seed=1), _noise(100, seed=2), _noise(100, seed=3)


@pytest.fixture(scope="module")
def memorised() -> Classifier:
    """An mlp fitted to MEMBERS' random labels: it can only have memorised them."""
    return _trained(MEMBERS, epochs=150)


# gradient-norm attack ------------------------------------------------------------------------------------------------


def _batchnorm_model() -> Classifier:
    """A Classifier with BatchNorm whose running statistics are far from their initial values."""
    torch.manual_seed(0)
    norm = nn.BatchNorm1d(16)
    norm.running_mean = torch.linspace(-1.0, 1.0, 16)
    norm.running_var = torch.linspace(0.5, 2.0, 16)
    stem = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), norm, nn.ReLU())
    return Classifier(stem, nn.Identity(), nn.Linear(16, 3))


def test_gradient_norms_equal_a_per_sample_autograd_loop_in_eval_mode() -> None:
    model = _batchnorm_model().train()
    before = _weights(model)
    norms = gradient_norms(model, MEMBERS.subset(torch.arange(10)), device=CPU, batch_size=4)
    assert model.training and _same_weights(model, before)  # mode restored, running statistics untouched
    model.eval()
    for i, norm in enumerate(norms):
        model.zero_grad()
        F.cross_entropy(model(MEMBERS.x[i : i + 1]), MEMBERS.y[i : i + 1]).backward()
        expected = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).norm()
        assert norm == pytest.approx(float(expected), rel=1e-5)


def test_gradient_norm_attack_finds_memorised_members(memorised: Classifier) -> None:
    result = gradient_norm_attack(memorised, MEMBERS, NONMEMBERS, device=CPU)
    assert result.auc > 0.9
    assert result.tpr_at_1pct_fpr > 10.0
    assert result.to_dict() == {"auc": result.auc, "tpr_at_1pct_fpr": result.tpr_at_1pct_fpr,
                                "members": 100, "nonmembers": 100}


def test_gradient_norm_attack_is_blind_on_a_model_that_saw_neither_set() -> None:
    bystander = _trained(OTHERS, epochs=150)
    assert abs(gradient_norm_attack(bystander, MEMBERS, NONMEMBERS, device=CPU).auc - 0.5) < 0.15


def test_gradient_norm_attack_needs_both_groups(memorised: Classifier) -> None:
    with pytest.raises(ConfigError, match="forget and hold-out"):
        gradient_norm_attack(memorised, MEMBERS.subset(torch.arange(0)), NONMEMBERS, device=CPU)


# linear probe --------------------------------------------------------------------------------------------------------


def _conv_stem_model() -> Classifier:
    """A stem that keeps its (16, 16, 16) feature map, 4096 values: the probe must pool it spatially."""
    torch.manual_seed(0)
    stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU())
    return Classifier(stem, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), nn.Linear(16, 3))


PROBED = {  # name -> (model, image side); the cnn's flat 4096-wide stem is pooled along the vector
    "mlp": (lambda: build_model(ModelSpec("mlp", 1, 8, 3), seed=0), 8),
    "cnn": (lambda: build_model(ModelSpec("cnn", 1, 32, 3), seed=0), 32),
    "conv_map": (_conv_stem_model, 16),
}


@pytest.mark.parametrize("layer", ["stem", "penultimate"])
@pytest.mark.parametrize("name", sorted(PROBED))
def test_probe_separates_shifted_members_and_not_identical_ones(name: str, layer: ProbeLayer) -> None:
    build, side = PROBED[name]
    model = build()
    nonmembers = _noise(80, seed=2, side=side)
    shifted = linear_probe(model, _noise(80, seed=1, side=side, shift=0.5), nonmembers, layer=layer, device=CPU)
    alike = linear_probe(model, _noise(80, seed=1, side=side), nonmembers, layer=layer, device=CPU)
    assert shifted.auc > 0.8 and shifted.accuracy > 65.0
    # under the null, an out-of-fold AUC of 80 + 80 samples spreads by about 0.06 (fold models add to the
    # sampling noise); a probe scored on its own training fold would be near 1 here
    assert abs(alike.auc - 0.5) < 0.2


def test_probe_balances_groups_is_seeded_and_leaves_the_model_as_found() -> None:
    model = build_model(ModelSpec("mlp", 1, 8, 3), seed=0).train()
    before = _weights(model)
    forget, holdout = _noise(30, seed=1, shift=0.3), _noise(70, seed=2)
    first = linear_probe(model, forget, holdout, layer="penultimate", device=CPU, seed=4)
    assert first == linear_probe(model, forget, holdout, layer="penultimate", device=CPU, seed=4)
    assert first.to_dict() == {"layer": "penultimate", "auc": first.auc, "accuracy": first.accuracy,
                               "members": 30, "nonmembers": 30}
    assert model.training and _same_weights(model, before)


def test_probe_rejects_tiny_groups_and_unknown_layers() -> None:
    model = build_model(ModelSpec("mlp", 1, 8, 3), seed=0)
    with pytest.raises(ConfigError, match="at least 4 forget"):
        linear_probe(model, _noise(3, seed=1), _noise(50, seed=2), layer="stem", device=CPU)
    with pytest.raises(ConfigError, match="valid: stem, penultimate"):
        linear_probe(model, _noise(10, seed=1), _noise(10, seed=2), layer="head", device=CPU)  # type: ignore[arg-type]


# relearning ----------------------------------------------------------------------------------------------------------


def _blobs(n_per_class: int, seed: int) -> LabeledData:
    """Three well-separated clusters of 1x4x4 images (fixed centres; ``seed`` draws the noise)."""
    centres = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 3.0
    y = torch.arange(3).repeat_interleave(n_per_class)
    x = centres[y] + 0.3 * torch.randn(len(y), 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    return LabeledData(x, y, torch.arange(len(y)))


TRAIN, HELD_OUT = _blobs(40, seed=1), _blobs(20, seed=2)
FEW = TRAIN.where_classes((2,), keep=True).subset(torch.arange(5))
RETAIN = TRAIN.where_classes((2,), keep=False)
PROBE = HELD_OUT.where_classes((2,), keep=True)


def test_a_model_that_never_saw_the_class_relearns_it_in_some_epochs() -> None:
    retrained = _trained(RETAIN, epochs=10)
    before = _weights(retrained)
    result = relearn_epochs(retrained, FEW, RETAIN, PROBE, threshold=90.0, max_epochs=30, device=CPU)
    assert _same_weights(retrained, before)
    assert result.curve[0] < 10.0  # it really had not learned class 2
    assert result.epochs is not None and result.epochs >= 1
    assert result.curve[result.epochs] >= 90.0 > max(result.curve[: result.epochs])
    assert len(result.curve) == 31
    assert result.to_dict() == {"epochs": result.epochs, "threshold": 90.0, "curve": list(result.curve)}


def test_a_model_that_still_knows_the_class_needs_no_epochs() -> None:
    original = _trained(TRAIN, epochs=10)
    assert relearn_epochs(original, FEW, RETAIN, PROBE, threshold=90.0, max_epochs=1, device=CPU).epochs == 0


def test_an_unreached_threshold_gives_none() -> None:
    retrained = _trained(RETAIN, epochs=10)
    result = relearn_epochs(retrained, FEW, RETAIN, PROBE, threshold=100.0, max_epochs=2, lr=1e-7, device=CPU)
    assert result.epochs is None and len(result.curve) == 3


@pytest.mark.parametrize(("threshold", "max_epochs", "match"), [(0.0, 5, "threshold"), (101.0, 5, "threshold"),
                                                                 (50.0, 0, "max_epochs")])
def test_relearn_rejects_bad_settings(threshold: float, max_epochs: int, match: str) -> None:
    model = build_model(ModelSpec("mlp", 1, 4, 3), seed=0)
    with pytest.raises(ConfigError, match=match):
        relearn_epochs(model, FEW, RETAIN, PROBE, threshold=threshold, max_epochs=max_epochs, device=CPU)
