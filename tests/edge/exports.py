"""Edge fixtures' building blocks: a hand-made export and a run directory as ``fedunlearn simulate`` leaves it.

The export is built by hand (dynamo export + a manifest written per
docs/edge-contract.md), so the runtime tests do not lean on the export side's
code. A dynamo export takes seconds: the suite makes one per session
(``edge_export`` in tests/conftest.py) and tests that change it work on a copy
(``copy_export``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from fedunlearn.common.checkpoint import save_checkpoint, state_sha256
from fedunlearn.common.models import Classifier, ModelSpec, build_model

__all__ = ["DIGITS", "SPEC", "copy_export", "make_export", "make_run_dir", "write_manifest"]

SPEC = ModelSpec("cnn", 1, 8, 10)
DIGITS = {"scale": 16.0, "mean": [0.3053], "std": [0.376], "raw_min": 0.0, "raw_max": 16.0}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(export: Path, **overrides: Any) -> dict[str, Any]:
    """manifest.json for the files in ``export``, hashes taken from the files as they are now."""
    current = json.loads((export / "manifest.json").read_text()) if (export / "manifest.json").exists() else {}
    parent = overrides.pop("parent_model_sha256", current.get("parent_model_sha256", ""))
    artifacts: dict[str, Any] = {}
    for name, precision in (("model.onnx", "fp32"), ("model.int8.onnx", "int8-dynamic")):
        if (export / name).exists():
            artifacts[name] = {"sha256": _sha(export / name), "bytes": (export / name).stat().st_size,
                               "precision": precision, "opset": 18, "exporter": "dynamo",
                               "parent_sha256": parent if precision == "fp32" else _sha(export / "model.onnx")}
    manifest = {
        "format": "fedunlearn-manifest/1", "created": "2026-01-01T00:00:00Z", "architecture": SPEC.name,
        "num_classes": 10, "class_names": [f"digit-{k}" for k in range(10)],
        "input": {"name": "input", "shape": [None, 1, 8, 8], "dtype": "float32"},
        "output": {"name": "logits", "shape": [None, 10], "dtype": "float32"},
        "preprocessing": dict(DIGITS), "parent_model_sha256": parent, "source_checkpoint": "../model.pt",
        "requests": [], "audit": {}, "versions": {}, "artifacts": artifacts,
    }
    manifest.update(overrides)
    (export / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def _add_int8(export: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(export / "model.onnx", export / "model.int8.onnx", weight_type=QuantType.QInt8)


def make_export(root: Path, *, int8: bool = False, seed: int = 0) -> Path:
    """root/model.pt (checkpoint) and root/export/{model.onnx, [model.int8.onnx], manifest.json}."""
    model = build_model(SPEC, seed=seed).eval()
    with torch.no_grad():
        model.head.weight.mul_(20)  # peaked outputs: the top class is never a float-noise tie
    save_checkpoint(root / "model.pt", model.state_dict(), SPEC)
    export = root / "export"
    export.mkdir(parents=True)
    torch.onnx.export(model, (torch.zeros(2, 1, 8, 8),), export / "model.onnx", dynamo=True,
                      input_names=["input"], output_names=["logits"], external_data=False,
                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, verbose=False)
    if int8:
        _add_int8(export)
    write_manifest(export, parent_model_sha256=state_sha256(model.state_dict()))
    return export


def copy_export(built: Path, root: Path, *, int8: bool = False) -> Path:
    """What ``make_export(root, int8=int8)`` makes, copied from ``built`` (a fp32 ``make_export``) instead of
    exported again; the int8 file is quantised from the copied fp32 one, as make_export would."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(built.parent / "model.pt", root / "model.pt")
    export = Path(shutil.copytree(built, root / "export"))
    if int8:
        _add_int8(export)
        write_manifest(export)  # the parent hash stays; the int8 artifact joins the manifest
    return export


def make_run_dir(path: Path, model: Classifier, spec: ModelSpec) -> Path:
    """A run directory as ``fedunlearn simulate`` leaves it, reduced to what export reads."""
    sha = save_checkpoint(path / "model.pt", model.state_dict(), spec, {"role": "final global model"})
    scenario = {"name": "edge-test", "seed": 0, "data": {"dataset": "digits", "data_dir": None}}
    report = {
        "status": "completed",
        "artifacts": {"model": "model.pt", "model_sha256": sha},
        "requests": [
            {"request_id": "req-aaaa", "kind": "ids", "num_samples": 3, "partition": 0, "status": "committed",
             "sample_ids": [11, 12, 13]},
            {"request_id": "req-bbbb", "kind": "class", "num_samples": 40, "target_class": 3, "status": "pending"},
        ],
        "evaluation": {"forget_ids": [11, 12, 13], "test_ids": [1, 2]},
    }
    (path / "scenario.json").write_text(json.dumps(scenario))
    (path / "report.json").write_text(json.dumps(report))
    return path
