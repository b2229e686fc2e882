"""How a model is packaged for the edge: the int8 mode, and the images that calibrate it.

The scenario's ``[export]`` section, ``fedunlearn edge export --int8`` and the
edge bench all speak these types, and ``Int8Mode.parse`` is where an int8 mode
given as text is checked. Torch-free on purpose: the scenario parser and the
CLI's option parsing import it without loading the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from fedunlearn.common.errors import ConfigError

__all__ = ["CalibrationSource", "ExportPlan", "Int8Mode"]


class Int8Mode(StrEnum):
    """Which int8 model sits beside model.onnx (docs/edge-contract.md)."""

    STATIC = "static"  # QDQ, activation ranges calibrated on real images: integer convolutions
    DYNAMIC = "dynamic"  # linear layers only, ranges measured per batch at run time: needs no images
    NONE = "none"  # fp32 only

    @classmethod
    def parse(cls, value: object, where: str) -> Int8Mode:
        """``value`` as a mode; ``where`` names the setting (``--int8``, ``[export].int8``) in the error."""
        for mode in cls:
            if value == mode.value:
                return mode
        *most, last = (mode.value for mode in cls)
        raise ConfigError(f"{where} must be {', '.join(most)} or {last}, got {value!r}")


class CalibrationSource(StrEnum):
    """Where the images that calibrate static int8 come from; the images that measure the artifacts
    (agreement, accuracy) are always test images, and never the calibration ones."""

    TRAIN = "train"  # the model's training images; the bench's retain set, so the forget set sets no range
    TEST_SET = "test-set"  # part of the test split: the server holds no training data of its own


@dataclass(frozen=True)
class ExportPlan:
    """What every export is asked for: the int8 mode and how many images calibrate static int8.

    Built from text at the edges (TOML, command line); a mode given as a string is parsed here.
    """

    int8: Int8Mode = Int8Mode.STATIC
    calibration: int = 512

    def __post_init__(self) -> None:
        object.__setattr__(self, "int8", Int8Mode.parse(self.int8, "int8"))
        if isinstance(self.calibration, bool) or self.calibration < 1:
            raise ConfigError(f"calibration must be >= 1 images, got {self.calibration}")
