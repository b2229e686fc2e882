"""An export folder's artifacts: fp32 ONNX, its int8 quantisation and their manifest entries.

Shared by ``fedunlearn edge export`` and the federation's export step: both build the
artifacts in a staging folder, may look at them there (the federation has the
requesting clients audit them), and only then move what passed into the export
folder, the manifest last, so a reader never sees a manifest without its files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from common.checkpoint import state_sha256
from common.data.tensors import DatasetBundle
from common.edge.export import ExportInfo, export_onnx
from common.edge.manifest import RawPreprocessing, new_manifest, set_artifact, validate_manifest, write_manifest
from common.edge.quantize import QuantizeInfo, quantize_int8
from common.models import ModelSpec

__all__ = ["EVAL_SAMPLES", "FP32_NAME", "INT8_NAME", "MAX_INT8_DROP", "MIN_INT8_AGREEMENT", "PARITY_SAMPLES",
           "Int8Mode", "PackageInputs", "build_artifacts", "dataset_manifest", "publish"]

FP32_NAME, INT8_NAME = "model.onnx", "model.int8.onnx"
PARITY_SAMPLES = 256  # fp32 parity: ORT and torch agree to ~1e-6, a few hundred inputs show any bug
EVAL_SAMPLES = 2000  # int8: enough test samples that a 1-point accuracy drop is visible above the noise
MIN_INT8_AGREEMENT = 0.99  # the int8 bar: top-1 agreement with fp32, and at most this test-accuracy drop (points)
MAX_INT8_DROP = 1.0
Int8Mode = Literal["static", "dynamic", "none"]


@dataclass(frozen=True)
class PackageInputs:
    """Preprocessed (N, C, H, W) float32 inputs for the checks, and where they came from."""

    parity: torch.Tensor
    evaluation: np.ndarray
    labels: np.ndarray | None
    calibration: np.ndarray | None
    kind: Literal["test-set", "random"]


def dataset_manifest(spec: ModelSpec, bundle: DatasetBundle, state: Mapping[str, torch.Tensor], *,
                     source_checkpoint: str | None, requests: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """A manifest (no artifacts yet) for weights ``state`` trained on ``bundle``: raw values span [0, scale]."""
    prep = bundle.preprocessing
    return new_manifest(
        architecture=spec.name, num_classes=spec.num_classes, class_names=bundle.class_names,
        input_shape=(spec.in_channels, spec.image_size, spec.image_size),
        preprocessing=RawPreprocessing(prep.scale, prep.mean, prep.std, 0.0, prep.scale),
        parent_model_sha256=state_sha256(state), source_checkpoint=source_checkpoint, requests=requests)


def build_artifacts(model: torch.nn.Module, spec: ModelSpec, stage: Path, manifest: dict[str, Any], *,
                    parent_sha256: str, inputs: PackageInputs, int8: Int8Mode,
                    int8_notes: Sequence[str] = ()) -> tuple[dict[str, Any], str | None]:
    """Write model.onnx (and model.int8.onnx) into ``stage``; returns ``manifest`` with their entries and
    the int8 model's verdict: None, or why it misses its bar (it is still written, the verdict in its entry)."""
    fp32 = export_onnx(model, spec, stage / FP32_NAME, example=inputs.parity)
    manifest = set_artifact(manifest, FP32_NAME, _fp32_entry(fp32, parent_sha256, inputs.kind))
    if int8 == "none":
        return manifest, None
    quantized = quantize_int8(stage / FP32_NAME, stage / INT8_NAME, mode=int8, calibration=inputs.calibration,
                              evaluation=inputs.evaluation, labels=inputs.labels)
    verdict = _int8_verdict(quantized)
    notes = [*int8_notes, *([] if verdict is None else [verdict])]
    return set_artifact(manifest, INT8_NAME, _int8_entry(quantized, inputs.kind, notes)), verdict


def _fp32_entry(info: ExportInfo, parent: str, kind: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "sha256": info.sha256, "bytes": info.bytes, "precision": "fp32", "parent_sha256": parent,
        "exporter": info.exporter, "opset": info.opset,
        "parity": {"max_abs_diff": info.max_abs_diff, "max_abs_logit": info.max_abs_logit,
                   "samples": info.samples, "inputs": kind, "batch_sizes": list(info.batch_sizes)},
    }
    if info.warnings:
        entry["warnings"] = list(info.warnings)
    return entry


def _int8_entry(info: QuantizeInfo, kind: str, notes: list[str]) -> dict[str, Any]:
    a = info.agreement
    entry: dict[str, Any] = {
        "sha256": info.sha256, "bytes": info.bytes, "precision": info.precision, "parent_sha256": info.parent_sha256,
        "calibration_samples": info.calibration_samples,
        "parity": {"top1_agreement": a.top1_agreement, "max_abs_diff": a.max_abs_diff, "samples": a.samples,
                   "inputs": kind, "fp32_accuracy": a.fp32_accuracy, "int8_accuracy": a.int8_accuracy},
    }
    if notes:
        entry["warnings"] = list(notes)
    return entry


def _int8_verdict(info: QuantizeInfo) -> str | None:
    """A warning when the int8 model misses the bar it is meant to meet (it is still written)."""
    a = info.agreement
    drop = None if a.fp32_accuracy is None or a.int8_accuracy is None else a.fp32_accuracy - a.int8_accuracy
    if a.top1_agreement >= MIN_INT8_AGREEMENT and (drop is None or drop <= MAX_INT8_DROP):
        return None
    figures = f"top-1 agreement {100 * a.top1_agreement:.1f}%" + ("" if drop is None else f", accuracy drop {drop:.2f}")
    return (f"the int8 model misses the target ({figures}; want >= {100 * MIN_INT8_AGREEMENT:.0f}% and a drop <= "
            f"{MAX_INT8_DROP:g} point): prefer model.onnx on devices that can afford it")


def publish(stage: Path, out: Path, manifest: dict[str, Any]) -> None:
    """Move the checked files in, the manifest last; an old int8 file this manifest does not list goes."""
    validate_manifest(manifest)
    out.mkdir(parents=True, exist_ok=True)
    for name in (FP32_NAME, INT8_NAME):
        if (stage / name).is_file():
            os.replace(stage / name, out / name)
        elif (out / name).is_file():
            (out / name).unlink()  # --int8 none: an old int8 file would not match this manifest
    write_manifest(out, manifest)


