"""The images an export is checked and calibrated on, picked the same way by every caller.

Three sets, all preprocessed (N, C, H, W) float32:
- parity: fp32 ONNX Runtime against torch (the first PARITY_SAMPLES of a random order of the test split);
- measured: int8 against fp32, and each artifact's accuracy (labelled test images);
- calibration: static int8's activation ranges, from a named ``CalibrationSource``; never measured on.
Without any dataset, parity and measurement fall back to random raw values (``random_inputs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.edge.manifest import RawPreprocessing
from fedunlearn.common.edge.plan import CalibrationSource, ExportPlan, Int8Mode
from fedunlearn.common.errors import DataError
from fedunlearn.common.models import ModelSpec

__all__ = ["EVAL_SAMPLES", "PARITY_SAMPLES", "PackageInputs", "package_inputs", "random_inputs"]

PARITY_SAMPLES = 256  # fp32 parity: ORT and torch agree to ~1e-6, a few hundred inputs show any bug
EVAL_SAMPLES = 2000  # int8: enough test samples that a 1-point accuracy drop is visible above the noise


@dataclass(frozen=True)
class PackageInputs:
    """The checks' inputs. ``measured`` is None for random inputs (no labels, nothing to calibrate on)."""

    parity: torch.Tensor
    measured: LabeledData | None
    calibration: np.ndarray | None

    @property
    def kind(self) -> Literal["test-set", "random"]:
        """What the manifest's parity entries say the checks ran on."""
        return "random" if self.measured is None else "test-set"

    @property
    def evaluation(self) -> np.ndarray:
        return self.parity.numpy() if self.measured is None else self.measured.x.numpy()

    @property
    def labels(self) -> np.ndarray | None:
        return None if self.measured is None else self.measured.y.numpy()


def package_inputs(test: LabeledData, *, plan: ExportPlan, seed: int, calibrate_on: CalibrationSource,
                   train: LabeledData | None = None, measure: int | None = EVAL_SAMPLES) -> PackageInputs:
    """Parity, measurement and calibration images from one seeded random order of ``test``.

    calibrate_on TEST_SET: the first ``plan.calibration`` of that order (at most half the split) calibrate,
    whatever the int8 mode, and the measured images come from the rest.
    calibrate_on TRAIN: ``plan.calibration`` random images of ``train`` (static int8 only).
    measure: how many test images measure the artifacts (None: all that are left).
    """
    if calibrate_on is CalibrationSource.TRAIN and train is None:
        raise DataError("calibrating on training images needs the training images (train=...)")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(test), generator=generator)
    calibration = None
    if calibrate_on is CalibrationSource.TEST_SET:
        count = min(plan.calibration, len(test) // 2)
        calibration, order = test.x[order[:count]].numpy(), order[count:]
    elif plan.int8 is Int8Mode.STATIC and train is not None:
        calibration = train.x[torch.randperm(len(train), generator=generator)[: plan.calibration]].numpy()
    return PackageInputs(parity=test.x[order[:PARITY_SAMPLES]], measured=test.subset(order[:measure]),
                         calibration=calibration)


def random_inputs(prep: RawPreprocessing, spec: ModelSpec) -> PackageInputs:
    """Honest but weak: uniform raw values in the declared range, preprocessed like real ones."""
    generator = torch.Generator().manual_seed(0)
    raw = prep.raw_min + (prep.raw_max - prep.raw_min) * torch.rand(
        PARITY_SAMPLES, spec.in_channels, spec.image_size, spec.image_size, generator=generator)
    mean = torch.tensor(prep.mean).view(1, -1, 1, 1)
    std = torch.tensor(prep.std).view(1, -1, 1, 1)
    return PackageInputs(parity=((raw / prep.scale - mean) / std).float(), measured=None, calibration=None)
