"""Model zoo: every architecture is a ``Classifier`` = body (penultimate features) + linear head.

The split matters: the activation leakage approximator reads the penultimate
activations, and Fisher/SalUn walk the parameters by name. Builders are
keyword-only and take the input geometry so one name works on 8x8 digits,
28x28 grey images and 32x32 colour images.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import torch
from torch import nn

from fedunlearn.common.errors import ModelError
from fedunlearn.common.registry import Registry

__all__ = ["MODELS", "Classifier", "ModelSpec", "build_model", "model_with_weights", "weights_of"]


class Classifier(nn.Module):
    """stem -> neck -> head.

    stem: (N, C, H, W) -> generic features (convolutions, early layers)
    neck: stem features -> (N, D) penultimate activations
    head: (N, D) -> (N, K) logits

    The split lets unlearning adapt only the sample-specific top of the
    network (neck + head) on cached stem features, and lets the activation
    approximator read the penultimate layer.
    """

    def __init__(self, stem: nn.Module, neck: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.stem = stem
        self.neck = neck
        self.head = head

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    def top(self) -> Classifier:
        """A view of neck + head that takes stem features; it shares (not copies) the parameters."""
        return Classifier(nn.Identity(), self.neck, self.head)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild an architecture (weights travel separately)."""

    name: str
    in_channels: int
    image_size: int
    num_classes: int

    def to_dict(self) -> dict[str, int | str]:
        return asdict(self)


Builder = Callable[[ModelSpec], Classifier]
MODELS: Registry[Builder] = Registry("model")


def build_model(spec: ModelSpec, *, seed: int | None = None) -> Classifier:
    """Fresh, randomly initialised model; ``seed`` makes the init reproducible."""
    if spec.in_channels < 1 or spec.image_size < 4 or spec.num_classes < 2:
        raise ModelError(f"model geometry makes no sense: {spec}")
    builder = MODELS.get(spec.name)
    if seed is None:
        model = builder(spec)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = builder(spec)
    return _channels_last(model)


def _channels_last(model: Classifier) -> Classifier:
    """Convolution weights in channels-last layout, which makes the convolutions (and the max-pooling after
    them) run channels-last on NCHW inputs too. On this project's 2-core CPU the CNN then trains a
    10,000-image Fashion-MNIST epoch in 1.87 s instead of 2.69 s and scores 8,192 images in 0.42 s instead of
    0.96 s on two threads (3.12 / 3.75 s and 0.65 / 1.63 s on one; best of 3): NCHW max-pooling was the slow
    part. MobileNetV3-small trains an epoch in 5.96 s instead of 10.93 s on two threads. Models without 4-D
    weights (the MLP) are unchanged; state dicts, checkpoints and ONNX exports do not depend on the layout."""
    return model.to(memory_format=torch.channels_last)


def model_with_weights(spec: ModelSpec, state: Mapping[str, torch.Tensor]) -> Classifier:
    """The architecture of ``spec`` holding ``state``'s weights, in eval mode (to score or export a model)."""
    model = build_model(spec, seed=0)
    model.load_state_dict(dict(state))
    return model.eval()


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``model``'s weights on the CPU, detached: what the server keeps once training ends."""
    return {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}


@MODELS.register("mlp")
def _mlp(spec: ModelSpec) -> Classifier:
    inputs = spec.in_channels * spec.image_size**2
    stem = nn.Sequential(nn.Flatten(), nn.Linear(inputs, 256), nn.ReLU())
    neck = nn.Sequential(nn.Linear(256, 128), nn.ReLU())
    return Classifier(stem, neck, nn.Linear(128, spec.num_classes))


@MODELS.register("cnn")
def _cnn(spec: ModelSpec) -> Classifier:
    """LeNet-style: two conv+pool blocks and a 256-unit hidden layer.

    Wide enough to fit (memorise) a 10k-20k training set, which is the regime
    unlearning has to undo.
    """
    side = spec.image_size // 4
    if side < 1:
        raise ModelError(f"cnn needs images of at least 4x4 pixels, got {spec.image_size}")
    stem = nn.Sequential(
        nn.Conv2d(spec.in_channels, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    neck = nn.Sequential(nn.Linear(64 * side * side, 256), nn.ReLU())
    return Classifier(stem, neck, nn.Linear(256, spec.num_classes))


@MODELS.register("resnet18")
def _resnet18(spec: ModelSpec) -> Classifier:
    """torchvision ResNet-18 with a CIFAR-style stem (3x3 stride-1 conv, no max-pool), so
    28x28 and 32x32 inputs are not shrunk to 1x1 before the last stage. Neck = layer4."""
    from torchvision import models as tv_models  # here, not at the top: see _mobilenet_v3_small

    net = tv_models.resnet18(weights=None, num_classes=spec.num_classes)
    first = nn.Conv2d(spec.in_channels, 64, 3, stride=1, padding=1, bias=False)
    stem = nn.Sequential(first, net.bn1, net.relu, net.layer1, net.layer2, net.layer3)
    neck = nn.Sequential(net.layer4, net.avgpool, nn.Flatten())
    return Classifier(stem, neck, nn.Linear(net.fc.in_features, spec.num_classes))


@MODELS.register("mobilenet_v3_small")
def _mobilenet_v3_small(spec: ModelSpec) -> Classifier:
    """torchvision MobileNetV3-Small; the first conv keeps stride 1 for inputs under 64 px.
    Neck = the last three inverted-residual blocks, the final conv and the hidden classifier layer."""
    # torchvision takes about two seconds to import, and every message a SuperNode is sent starts a fresh
    # ClientApp process that builds the model: the mlp and the cnn need none of it
    from torchvision import models as tv_models

    net = tv_models.mobilenet_v3_small(weights=None, num_classes=spec.num_classes)
    old = net.features[0][0]
    stride = 1 if spec.image_size < 64 else 2
    net.features[0][0] = nn.Conv2d(
        spec.in_channels, old.out_channels, 3, stride=stride, padding=1, bias=False
    )
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            # torchvision's 0.01 suits ImageNet-length training; after a few short local epochs the
            # running statistics would still be mostly their initial values, and eval mode (the audit,
            # the export) would see a near-constant classifier
            module.momentum = 0.1
    hidden = net.classifier[:-1]  # Linear, Hardswish, Dropout
    head = net.classifier[-1]
    stem = net.features[:-4]
    neck = nn.Sequential(net.features[-4:], net.avgpool, nn.Flatten(), hidden)
    return Classifier(stem, neck, nn.Linear(head.in_features, spec.num_classes))
