"""Model zoo contract, run over every registered architecture (torchvision's habit)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from fedunlearn.common.data.datasets import load_dataset
from fedunlearn.common.errors import ConfigError, ModelError, UnknownNameError
from fedunlearn.common.models import MODELS, Classifier, ModelSpec, build_model, model_with_weights
from fedunlearn.common.training import TrainConfig, accuracy, train

# (in_channels, image_size): digits, MNIST-like, CIFAR-like
GEOMETRIES = [(1, 8), (1, 28), (3, 32)]
NUM_CLASSES = 7  # not 10, so a hard-coded class count would show


def _spec(name: str, channels: int, size: int, classes: int = NUM_CLASSES) -> ModelSpec:
    return ModelSpec(name=name, in_channels=channels, image_size=size, num_classes=classes)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize(("channels", "size"), GEOMETRIES)
def test_forward_gives_one_logit_per_class(name: str, channels: int, size: int) -> None:
    model = build_model(_spec(name, channels, size), seed=0).eval()
    assert isinstance(model, Classifier)
    with torch.no_grad():
        logits = model(torch.randn(2, channels, size, size))
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", MODELS.names())
def test_embed_then_head_is_forward(name: str) -> None:
    """The activation approximator reads ``embed``; it must be exactly what the head sees."""
    model = build_model(_spec(name, 1, 8), seed=0).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        features = model.embed(x)
        assert features.ndim == 2 and features.shape[0] == 2
        assert features.shape[1] == model.head.in_features
        assert model.head.out_features == NUM_CLASSES
        assert torch.equal(model.head(features), model(x))


@pytest.mark.parametrize("name", MODELS.names())
def test_every_parameter_learns(name: str) -> None:
    """A training step reaches every weight: nothing is frozen or disconnected."""
    model = build_model(_spec(name, 1, 8), seed=0).train()
    loss = F.cross_entropy(model(torch.randn(2, 1, 8, 8)), torch.tensor([0, 1]))
    loss.backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name


@pytest.mark.parametrize("name", MODELS.names())
def test_seeded_build_is_reproducible_and_seeds_differ(name: str) -> None:
    spec = _spec(name, 1, 8)
    first, again = _weights(build_model(spec, seed=1)), _weights(build_model(spec, seed=1))
    other = _weights(build_model(spec, seed=2))
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize("name", MODELS.names())
def test_convolutions_run_channels_last_and_the_layout_does_not_change_the_model(name: str) -> None:
    """Built models hold 4-D weights channels-last (the CPU speed-up); weights that arrive contiguous (a
    checkpoint, a Flower message) load into that layout, and the outputs match the contiguous model's."""
    spec = _spec(name, 3, 32)
    model = build_model(spec, seed=0).eval()
    kernels = [p for p in model.parameters() if p.ndim == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
    assert bool(kernels) == (name != "mlp")
    contiguous = {k: v.contiguous() for k, v in model.state_dict().items()}
    loaded = model_with_weights(spec, contiguous)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in loaded.parameters() if p.ndim == 4)
    plain = build_model(spec, seed=0).to(memory_format=torch.contiguous_format).eval()
    plain.load_state_dict(contiguous)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), plain(x), rtol=1e-4, atol=1e-5)


def test_seeded_build_leaves_the_global_rng_alone() -> None:
    """A seed for the init must not reseed everything else the caller draws."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model(_spec("mlp", 1, 8), seed=5)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    ("channels", "size", "classes"),
    [(0, 8, 10), (1, 2, 10), (1, 0, 10), (1, 8, 1), (1, 8, 0), (-3, 8, 10)],
)
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_nonsense_geometry_is_a_model_error(name: str, channels: int, size: int, classes: int) -> None:
    with pytest.raises(ModelError):
        build_model(_spec(name, channels, size, classes))


def test_unknown_model_lists_the_valid_names() -> None:
    with pytest.raises(UnknownNameError) as excinfo:
        build_model(_spec("vgg99", 1, 8))
    assert isinstance(excinfo.value, ConfigError)
    for name in MODELS.names():
        assert name in str(excinfo.value)


def test_the_design_architectures_are_registered() -> None:
    assert {"mlp", "cnn", "resnet18", "mobilenet_v3_small"} <= set(MODELS.names())


def test_spec_round_trips_through_a_dict() -> None:
    spec = _spec("cnn", 3, 32, 10)
    assert ModelSpec(**spec.to_dict()) == spec


def test_mobilenet_batchnorm_momentum_is_0_1() -> None:
    """The cause the slow training check below guards against (torchvision's 0.01 leaves eval mode useless)."""
    model = build_model(ModelSpec("mobilenet_v3_small", 1, 8, 10), seed=0)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.1 for m in norms)


@pytest.mark.slow
def test_mobilenet_eval_mode_is_usable_after_short_training() -> None:
    """With torchvision's BatchNorm momentum (0.01), 130 steps leave the running statistics near their
    initial values and eval mode answers one class for everything (measured: 9% here, 97% with 0.1)."""
    digits = load_dataset("digits")
    data = digits.train.subset(torch.arange(400))
    model = build_model(ModelSpec("mobilenet_v3_small", 1, 8, 10), seed=0)
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    train(model, data, TrainConfig(epochs=10, batch_size=32, lr=3e-3), device=torch.device("cpu"),
          generator=torch.Generator().manual_seed(0))
    assert accuracy(model, data, device=torch.device("cpu")) > 50.0
