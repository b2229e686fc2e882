"""An export's artifacts: fp32 ONNX, its int8 quantisation and their manifest entries.

``common.edge.pipeline`` calls these in a staging folder; see there for who
looks at the artifacts before ``publish`` moves them into the export folder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fedunlearn.common.checkpoint import state_sha256
from fedunlearn.common.data.tensors import DatasetBundle
from fedunlearn.common.edge.export import ExportInfo, export_onnx
from fedunlearn.common.edge.inputs import PackageInputs
from fedunlearn.common.edge.manifest import RawPreprocessing, new_manifest, set_artifact
from fedunlearn.common.edge.plan import Int8Mode
from fedunlearn.common.edge.quantize import QuantizeInfo, quantize_int8
from fedunlearn.common.models import ModelSpec

__all__ = ["FP32_NAME", "INT8_NAME", "MAX_INT8_DROP", "MIN_INT8_AGREEMENT", "build_artifacts", "dataset_manifest"]

FP32_NAME, INT8_NAME = "model.onnx", "model.int8.onnx"
MIN_INT8_AGREEMENT = 0.99  # the int8 bar: top-1 agreement with fp32, and at most this test-accuracy drop (points)
MAX_INT8_DROP = 1.0


def dataset_manifest(spec: ModelSpec, bundle: DatasetBundle, state: Mapping[str, torch.Tensor], *,
                     source_checkpoint: str | None, requests: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """A manifest (no artifacts yet) for weights ``state`` trained on ``bundle``: raw values span [0, scale]."""
    prep = bundle.preprocessing
    return new_manifest(
        architecture=spec.name, num_classes=spec.num_classes, class_names=bundle.class_names,
        input_shape=(spec.in_channels, spec.image_size, spec.image_size),
        preprocessing=RawPreprocessing(prep.scale, prep.mean, prep.std, 0.0, prep.scale),
        parent_model_sha256=state_sha256(state), source_checkpoint=source_checkpoint, requests=requests)


def build_artifacts(model: torch.nn.Module, spec: ModelSpec, stage: Path, manifest: Mapping[str, Any], *,
                    inputs: PackageInputs, int8: Int8Mode,
                    int8_notes: Sequence[str] = ()) -> tuple[dict[str, Any], str | None]:
    """Write model.onnx (and model.int8.onnx) into ``stage``; returns ``manifest`` with their entries and
    the int8 model's verdict: None, or why it misses its bar (it is still written, the verdict in its entry).
    The fp32 file's parent is the manifest's ``parent_model_sha256``."""
    fp32 = export_onnx(model, spec, stage / FP32_NAME, example=inputs.parity)
    updated = set_artifact(manifest, FP32_NAME, _fp32_entry(fp32, manifest["parent_model_sha256"], inputs.kind))
    if int8 is Int8Mode.NONE:
        return updated, None
    quantized = quantize_int8(stage / FP32_NAME, stage / INT8_NAME, mode=int8, calibration=inputs.calibration,
                              evaluation=inputs.evaluation, labels=inputs.labels)
    verdict = _int8_verdict(quantized)
    notes = [*int8_notes, *([] if verdict is None else [verdict])]
    return set_artifact(updated, INT8_NAME, _int8_entry(quantized, inputs.kind, notes)), verdict


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
