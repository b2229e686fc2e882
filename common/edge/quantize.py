"""fp32 ONNX -> int8 ONNX with ONNX Runtime, measured against the fp32 model before it is kept.

Static quantisation (QDQ, calibrated on real inputs) is the default for the
edge: activations are int8 too, so convolutions run as integer kernels.
Dynamic quantisation needs no data (activation ranges are measured per batch
at run time) and quantises only MatMul/Gemm (the linear layers) ahead of time;
it is the fallback when no calibration data exists.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_dynamic,
    quantize_static,
)

from fedunlearn.common.edge.export import INPUT_NAME, OUTPUT_NAME, staging_dir
from fedunlearn.common.edge.plan import Int8Mode
from fedunlearn.common.errors import ConfigError, ModelError
from fedunlearn.common.files import sha256_file

__all__ = ["Agreement", "QuantizeInfo", "StaticSettings", "int8_agreement", "quantize_int8"]

logger = logging.getLogger(__name__)

Calibrator = Literal["minmax", "entropy", "percentile"]
_CALIBRATORS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                "percentile": CalibrationMethod.Percentile}
_BATCH = 64


@dataclass(frozen=True)
class StaticSettings:
    """Knobs of static quantisation; the defaults are the best of what was measured (ORT 1.32, x86 CPU).

    Measured on cnn/digits, cnn/fashion-mnist and mobilenet_v3_small/fashion-mnist (top-1 agreement
    with fp32 on the test set):
    - MinMax calibration. Entropy with ORT's default 128 histogram bins has a single candidate
      threshold and gives the very same model; with 2048 bins, and Percentile, agreement was no
      better (mobilenet: 96.4 % and 97.4 % against 97.3 %).
    - Per-channel weights: filter scales differ by orders of magnitude (depthwise convs most);
      per-tensor was equal on cnn and lower on mobilenet (97.1 %).
    - QUInt8 (asymmetric) activations: after ReLU/Hardswish they are (nearly) non-negative, so an
      unsigned zero point uses all 256 levels where symmetric int8 wastes half (mobilenet 95.8 %).
    - ``reduce_range`` (7-bit weights, against the u8s8 saturation of AVX2 kernels on old x86)
      lowered agreement slightly everywhere; off.
    The rest of the error is 8-bit activation rounding: 16-bit activations reach 99.5 % on mobilenet
    but run several times slower than fp32 on the CPU provider, so they are not offered.
    """

    calibrator: Calibrator = "minmax"
    per_channel: bool = True
    reduce_range: bool = False
    activations: Literal["uint8", "int8"] = "uint8"
    exclude_nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Agreement:
    """An int8 model against its fp32 parent on ``samples`` inputs.

    top1_agreement: fraction (0-1) of inputs where both pick the same class
    max_abs_diff:   largest |int8 logit - fp32 logit|
    fp32_accuracy, int8_accuracy: top-1 accuracy in percent (0-100), None without labels
    """

    top1_agreement: float
    max_abs_diff: float
    samples: int
    fp32_accuracy: float | None
    int8_accuracy: float | None


@dataclass(frozen=True)
class QuantizeInfo:
    """What the manifest records about an int8 model; ``parent_sha256`` is the fp32 file's sha256."""

    path: Path
    sha256: str
    bytes: int
    precision: Literal["int8-static", "int8-dynamic"]
    parent_sha256: str
    calibration_samples: int
    agreement: Agreement


class _Batches(CalibrationDataReader):  # type: ignore[misc]
    """Feeds the calibrator real, preprocessed inputs, ``_BATCH`` rows at a time."""

    def __init__(self, data: np.ndarray) -> None:
        self._batches = iter([{INPUT_NAME: data[i : i + _BATCH]} for i in range(0, len(data), _BATCH)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_int8(fp32_path: Path, out_path: Path, *, mode: Int8Mode, calibration: np.ndarray | None,
                  evaluation: np.ndarray, labels: np.ndarray | None = None,
                  settings: StaticSettings = StaticSettings()) -> QuantizeInfo:
    """Quantise ``fp32_path`` into ``out_path`` and measure it against the fp32 model.

    calibration: (M, C, H, W) float32 preprocessed inputs (static mode only; required there)
    evaluation:  (N, C, H, W) float32 preprocessed inputs for agreement and logit difference
    labels:      (N,) int class labels of ``evaluation`` for the accuracies, or None
    The int8 file replaces ``out_path`` only after it loads in ONNX Runtime and has been measured.
    """
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if not fp32_path.is_file():
        raise ModelError(f"fp32 model {fp32_path} does not exist")
    mode = Int8Mode.parse(mode, "int8 mode")
    if mode is Int8Mode.NONE:
        raise ConfigError("int8 mode none quantises nothing; ask for static or dynamic")
    calibrated = calibration if mode is Int8Mode.STATIC and calibration is not None else np.empty((0,), np.float32)
    if mode is Int8Mode.STATIC and len(calibrated) == 0:
        raise ConfigError("static int8 quantisation needs calibration inputs; pass a dataset or use dynamic")
    if len(evaluation) == 0 or (labels is not None and len(labels) != len(evaluation)):
        raise ConfigError(f"need evaluation inputs with one label each, got {len(evaluation)} inputs and "
                          f"{None if labels is None else len(labels)} labels")
    with staging_dir(out_path) as folder:
        prepared, draft = folder / "prepared.onnx", folder / out_path.name
        chatter = io.StringIO()  # ORT's calibrators print progress; keep stdout clean for --json
        try:
            with contextlib.redirect_stdout(chatter):
                _quantize(fp32_path, prepared, draft, mode, calibrated, settings)
        except Exception as err:
            raise ModelError(f"int8 quantisation ({mode}) of {fp32_path} failed "
                             f"({type(err).__name__}: {err})") from err
        finally:
            if chatter.getvalue():
                logger.debug("onnxruntime.quantization said: %s", chatter.getvalue())
        agreement = int8_agreement(fp32_path, draft, evaluation, labels)
        digest, size = sha256_file(draft), draft.stat().st_size
        os.replace(draft, out_path)
    return QuantizeInfo(path=out_path, sha256=digest, bytes=size,
                        precision="int8-static" if mode is Int8Mode.STATIC else "int8-dynamic",
                        parent_sha256=sha256_file(fp32_path), calibration_samples=len(calibrated),
                        agreement=agreement)


def _quantize(fp32_path: Path, prepared: Path, draft: Path, mode: Int8Mode, calibration: np.ndarray,
              settings: StaticSettings) -> None:
    # Shape inference + graph optimisation first (BatchNorm folded into convs, constants folded), as ORT
    # advises: it quantises the graph that will actually run and gives the calibrator every tensor's shape.
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
    if mode is Int8Mode.STATIC:
        _quantize_static(prepared, draft, calibration.astype(np.float32, copy=False), settings)
    else:
        # MatMul/Gemm only: with Conv too (ConvInteger), ORT's CPU provider ran 5x (cnn) to 27x (mobilenet)
        # slower than fp32, and mobilenet's agreement fell from 99.9 % to 97.6 %.
        quantize_dynamic(str(prepared), str(draft), weight_type=QuantType.QInt8, per_channel=False,
                         op_types_to_quantize=["MatMul", "Gemm"])


def _quantize_static(prepared: Path, draft: Path, calibration: np.ndarray, settings: StaticSettings) -> None:
    activation = QuantType.QUInt8 if settings.activations == "uint8" else QuantType.QInt8
    quantize_static(
        str(prepared), str(draft), _Batches(calibration), quant_format=QuantFormat.QDQ,
        per_channel=settings.per_channel, reduce_range=settings.reduce_range,
        activation_type=activation, weight_type=QuantType.QInt8,
        calibrate_method=_CALIBRATORS[settings.calibrator],
        nodes_to_exclude=list(settings.exclude_nodes) or None,
        # Symmetric int8 activations need a zero point of 0; uint8 ones keep their own.
        extra_options={"ActivationSymmetric": settings.activations == "int8"},
    )


def int8_agreement(fp32_path: Path, int8_path: Path, inputs: np.ndarray,
                   labels: np.ndarray | None = None) -> Agreement:
    """Run both models on ``inputs`` (N, C, H, W): agreement, max logit difference, accuracies (percent)."""
    fp32 = _logits(fp32_path, inputs)
    try:
        int8 = _logits(int8_path, inputs)
    except Exception as err:
        raise ModelError(f"the int8 model does not run in ONNX Runtime ({type(err).__name__}: {err})") from err
    if not np.isfinite(int8).all():
        raise ModelError("the int8 model produces non-finite logits")
    agree = fp32.argmax(1) == int8.argmax(1)
    return Agreement(
        top1_agreement=float(agree.mean()),
        max_abs_diff=float(np.max(np.abs(fp32 - int8))),
        samples=len(inputs),
        fp32_accuracy=None if labels is None else 100.0 * float((fp32.argmax(1) == labels).mean()),
        int8_accuracy=None if labels is None else 100.0 * float((int8.argmax(1) == labels).mean()),
    )


def _logits(path: Path, inputs: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    data = inputs.astype(np.float32, copy=False)
    return np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: data[i : i + 256]})[0]
                           for i in range(0, len(data), 256)])
