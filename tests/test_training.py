"""The shared training loop: recipes are checked, training fits, divergence stops, evaluation is clean."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import ConfigError, NonFiniteError
from fedunlearn.common.models import ModelSpec, build_model
from fedunlearn.common.training import TrainConfig, accuracy, make_optimizer, predict_logits, train

CPU = torch.device("cpu")
SPEC = ModelSpec(name="mlp", in_channels=1, image_size=4, num_classes=3)


def _blobs(n_per_class: int = 40, seed: int = 0) -> LabeledData:
    """Three well-separated clusters of 1x4x4 images: any working loop fits them."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 1, 4, 4, generator=generator) * 3.0
    y = torch.arange(3).repeat_interleave(n_per_class)
    x = centres[y] + 0.3 * torch.randn(len(y), 1, 4, 4, generator=generator)
    return LabeledData(x, y, torch.arange(len(y)))


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class _Echo(nn.Module):
    """Predicts the class written in each sample's first pixel: accuracy is known by construction."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.one_hot(x.flatten(1)[:, 0].long(), 3).float() + self.bias


@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": 0},
        {"epochs": -1},
        {"batch_size": 0},
        {"lr": 0.0},
        {"lr": -1e-3},
        {"lr": float("nan")},
        {"lr": float("inf")},
        {"optimizer": "rmsprop"},
        {"schedule": "step"},
        {"weight_decay": -0.1},
    ],
)
def test_bad_recipe_is_a_config_error_naming_the_field(bad: dict[str, object]) -> None:
    (field,) = bad
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**bad)  # type: ignore[arg-type]


def test_defaults_are_valid() -> None:
    TrainConfig()


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(epochs=15, batch_size=16, lr=1e-2, optimizer="adam"),
        TrainConfig(epochs=15, batch_size=16, lr=5e-2, optimizer="sgd", schedule="constant"),
    ],
)
def test_train_fits_a_separable_problem(config: TrainConfig) -> None:
    data = _blobs()
    model = build_model(SPEC, seed=0)
    assert accuracy(model, data, device=CPU) < 90.0
    returned = train(model, data, config, device=CPU, generator=torch.Generator().manual_seed(0))
    assert returned is model
    assert not model.training  # left ready for evaluation
    assert accuracy(model, data, device=CPU) >= 99.0
    assert accuracy(model, _blobs(seed=0, n_per_class=10), device=CPU) >= 99.0


def test_train_is_reproducible_with_the_same_generator() -> None:
    data, config = _blobs(), TrainConfig(epochs=2, batch_size=16)
    models = [build_model(SPEC, seed=0) for _ in range(3)]
    for model, seed in zip(models, (0, 0, 1), strict=True):
        train(model, data, config, device=CPU, generator=torch.Generator().manual_seed(seed))
    first, again, reshuffled = (_weights(m) for m in models)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], reshuffled[k]) for k in first)


def test_on_epoch_is_called_once_per_epoch() -> None:
    seen: list[int] = []
    train(build_model(SPEC, seed=0), _blobs(), TrainConfig(epochs=3), device=CPU,
          generator=torch.Generator().manual_seed(0), on_epoch=seen.append)
    assert seen == [0, 1, 2]


def test_huge_learning_rate_stops_with_non_finite_error() -> None:
    config = TrainConfig(epochs=5, batch_size=16, lr=1e30, optimizer="sgd", schedule="constant")
    with pytest.raises(NonFiniteError, match="learning rate"):
        train(build_model(SPEC, seed=0), _blobs(), config, device=CPU, generator=torch.Generator())


def test_training_on_nothing_is_a_config_error() -> None:
    empty = _blobs().subset(torch.zeros(120, dtype=torch.bool))
    with pytest.raises(ConfigError):
        train(build_model(SPEC, seed=0), empty, TrainConfig(epochs=1), device=CPU,
              generator=torch.Generator())


def test_accuracy_is_in_percent() -> None:
    predicted = torch.tensor([0, 1, 2, 2])
    x = predicted.float().view(4, 1, 1, 1).expand(4, 1, 2, 2).contiguous()
    data = LabeledData(x, torch.tensor([0, 1, 2, 0]), torch.arange(4))
    assert accuracy(_Echo(), data, device=CPU) == pytest.approx(75.0)
    assert accuracy(_Echo(), data.subset(torch.tensor([0, 1])), device=CPU) == pytest.approx(100.0)
    assert accuracy(_Echo(), data.subset(torch.tensor([3])), device=CPU) == 0.0


def test_accuracy_of_nothing_is_nan() -> None:
    no_labels = torch.zeros(0, dtype=torch.int64)
    empty = LabeledData(torch.zeros(0, 1, 2, 2), no_labels, no_labels)
    assert math.isnan(accuracy(_Echo(), empty, device=CPU))


@pytest.mark.parametrize("training", [True, False])
def test_predict_logits_evaluates_in_eval_mode_and_restores_the_mode(training: bool) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Dropout(0.5), nn.Linear(32, 3))
    model.train(training)
    x = torch.randn(10, 1, 4, 4)
    logits = predict_logits(model, x, device=CPU)
    assert model.training is training
    assert all(m.training is training for m in model.modules())
    with torch.no_grad():
        expected = model.eval()(x)
    assert torch.allclose(logits, expected)  # dropout was off
    assert logits.device.type == "cpu" and not logits.requires_grad


def test_predict_logits_batches_do_not_change_the_answer() -> None:
    model = build_model(SPEC, seed=0)
    x = torch.randn(10, 1, 4, 4)
    whole = predict_logits(model, x, device=CPU)
    assert whole.shape == (10, 3)
    assert torch.allclose(predict_logits(model, x, device=CPU, batch_size=3), whole, atol=1e-6)


def test_adam_runs_fused_on_the_cpu_and_steps_like_the_reference_loop() -> None:
    torch.manual_seed(0)
    start = [torch.randn(64, 32), torch.randn(32)]
    grads = [[torch.randn_like(w) for w in start] for _ in range(5)]
    fused = [nn.Parameter(w.clone()) for w in start]
    reference = [nn.Parameter(w.clone()) for w in start]
    optimizer = make_optimizer(fused, "adam", 1e-2, weight_decay=1e-3)
    assert optimizer.defaults["fused"] is True
    loop = torch.optim.Adam(reference, lr=1e-2, weight_decay=1e-3, foreach=False)
    for step in grads:
        for opt, params in ((optimizer, fused), (loop, reference)):
            for p, g in zip(params, step, strict=True):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(fused, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
