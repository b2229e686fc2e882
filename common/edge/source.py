"""A saved model (a run folder or any model.pt) as an edge export: what ``fedunlearn edge export`` runs.

The dataset the model was trained on supplies real inputs: test images for
the checks, training images to calibrate static int8. It is named by the
caller, else by the checkpoint's metadata, else by the run's scenario.json.
Without one, only a checkpoint that records its preprocessing can be exported,
checked on random inputs in the raw value range (the manifest says so) and
quantised dynamically.

The export itself is ``common.edge.pipeline``'s: nothing replaces the old
files until every new one passed its checks. A re-export by hand also keeps
what the federation's clients audited: the figures of the same weights carry
over, and an audited export of other weights is never replaced.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedunlearn.common.checkpoint import load_checkpoint
from fedunlearn.common.data.datasets import load_dataset
from fedunlearn.common.data.tensors import DatasetBundle
from fedunlearn.common.edge.inputs import package_inputs, random_inputs
from fedunlearn.common.edge.manifest import (
    MANIFEST_NAME,
    RawPreprocessing,
    new_manifest,
    read_manifest_document,
    set_audit,
)
from fedunlearn.common.edge.package import FP32_NAME
from fedunlearn.common.edge.pipeline import ExportJob, stage_package
from fedunlearn.common.edge.plan import CalibrationSource, ExportPlan, Int8Mode
from fedunlearn.common.edge.runtime import Manifest
from fedunlearn.common.errors import ConfigError, DataError, FedUnlearnError, ModelError
from fedunlearn.common.files import sha256_file
from fedunlearn.common.models import ModelSpec

__all__ = ["ExportResult", "export_checkpoint"]


@dataclass(frozen=True)
class ExportResult:
    """Where the export went, its manifest (as written) and every warning raised on the way."""

    folder: Path
    manifest: Manifest
    warnings: tuple[str, ...]


@dataclass
class _Source:
    checkpoint: Path
    out: Path
    scenario: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)


def _read_optional_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        loaded = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err})") from err
    return loaded if isinstance(loaded, dict) else {}


def _resolve_source(source: Path, out: Path | None) -> _Source:
    """RUN_DIR -> RUN_DIR/model.pt (+ scenario.json, report.json); MODEL.pt -> itself (+ a scenario.json beside it)."""
    if source.is_dir():
        checkpoint = source / "model.pt"
        if not checkpoint.is_file():
            raise ModelError(f"{source} has no model.pt; pass a run directory or a .pt file")
        folder = source
    elif source.is_file():
        checkpoint, folder = source, source.parent
    else:
        raise ModelError(f"{source} does not exist; pass a run directory (with model.pt) or a .pt file")
    scenario = _read_optional_json(folder / "scenario.json")
    # report.json's requests describe the run's final model only: use them when this is that very file.
    report = _read_optional_json(folder / "report.json") if checkpoint.name == "model.pt" else {}
    return _Source(checkpoint, out or folder / "export", scenario, report)


def _load_bundle(dataset: str | None, data_dir: Path | None, meta: Mapping[str, Any], src: _Source,
                 spec: ModelSpec) -> DatasetBundle | None:
    data = src.scenario.get("data", {}) if isinstance(src.scenario.get("data"), dict) else {}
    name = dataset or meta.get("dataset") or data.get("dataset")
    if not name:
        return None
    root = data_dir or data.get("data_dir")
    bundle = load_dataset(str(name), root=root, download=False, seed=int(src.scenario.get("seed", 0)))
    expected = (spec.in_channels, spec.image_size, spec.image_size)
    if bundle.input_shape != expected or bundle.num_classes != spec.num_classes:
        raise ConfigError(f"dataset {name!r} has {bundle.input_shape} inputs and {bundle.num_classes} classes but "
                          f"the {spec.name} model expects {expected} and {spec.num_classes}; pass the right --dataset")
    return bundle


def _preprocessing(meta: Mapping[str, Any], bundle: DatasetBundle | None) -> RawPreprocessing:
    """The checkpoint's own record wins; raw values are assumed to span [0, scale] (pixels, digits' 0..16)."""
    recorded = meta.get("preprocessing")
    if recorded is None:
        if bundle is None:
            raise ConfigError("cannot tell how this model's inputs were preprocessed: the checkpoint does not say "
                              "and no dataset is known; pass --dataset NAME (the dataset it was trained on)")
        p = bundle.preprocessing
        return RawPreprocessing(p.scale, p.mean, p.std, 0.0, p.scale)
    try:
        scale = float(recorded["scale"])
        prep = RawPreprocessing(scale, tuple(map(float, recorded["mean"])), tuple(map(float, recorded["std"])),
                                float(recorded.get("raw_min", 0.0)), float(recorded.get("raw_max", scale)))
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ModelError(f"checkpoint metadata 'preprocessing' is malformed ({err}): {recorded!r}") from err
    if bundle is not None:
        known = bundle.preprocessing
        if (prep.scale, prep.mean, prep.std) != (known.scale, known.mean, known.std):
            raise DataError(f"checkpoint preprocessing {recorded!r} differs from dataset {bundle.name!r}'s "
                            f"{known}; export with the dataset the model was trained on")
    return prep


def _keep_audited_exports(out: Path, model_sha256: str) -> None:
    """Refuse to replace an export the federation's clients audited (a run's export/ holds the unlearned
    model's) with one of another model: that audit cannot be redone once the forget sets are purged."""
    try:
        old = read_manifest_document(out / MANIFEST_NAME)
    except FedUnlearnError:
        return
    audited = any("audit" in entry for entry in old["artifacts"].values())
    if audited and old["parent_model_sha256"] != model_sha256:
        raise ConfigError(f"{out} holds audited artifacts of another model (parent {old['parent_model_sha256'][:12]}); "
                          "they cannot be re-audited once the forget sets are purged: pass --out DIR")


def _carry_audit(old_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Audit figures of an earlier export survive a re-export of the very same bytes / weights."""
    try:
        old = read_manifest_document(old_dir / MANIFEST_NAME)
    except FedUnlearnError:
        return manifest
    if old["audit"] and old["parent_model_sha256"] == manifest["parent_model_sha256"]:
        manifest = set_audit(manifest, old["audit"])
    for name, entry in manifest["artifacts"].items():
        previous = old["artifacts"].get(name, {})
        if "audit" in previous and previous.get("sha256") == entry["sha256"]:
            manifest = set_audit(manifest, previous["audit"], artifact=name)
    return manifest


def _describe(src: _Source, meta: Mapping[str, Any], spec: ModelSpec, bundle: DatasetBundle | None,
              prep: RawPreprocessing, warn: Callable[[str], None]) -> dict[str, Any]:
    """The manifest before any artifact: what the model is, how to feed it, which requests it honours."""
    class_names = meta.get("class_names") or (bundle.class_names if bundle else [str(k) for k in
                                                                                  range(spec.num_classes)])
    requests = src.report.get("requests", [])
    if requests and src.report.get("artifacts", {}).get("model_sha256") != sha256_file(src.checkpoint):
        warn("report.json's requests describe another model.pt (hash differs); leaving them out of the manifest")
        requests = []
    return new_manifest(
        architecture=spec.name, num_classes=spec.num_classes, class_names=class_names,
        input_shape=(spec.in_channels, spec.image_size, spec.image_size), preprocessing=prep,
        parent_model_sha256=meta["model_sha256"],
        source_checkpoint=os.path.relpath(src.checkpoint.resolve(), src.out.resolve()), requests=requests)


def export_checkpoint(source: Path, *, plan: ExportPlan | None = None, out: Path | None = None,
                      dataset: str | None = None, data_dir: Path | None = None) -> ExportResult:
    """Export RUN_DIR/model.pt or MODEL.pt into ``out`` (default: RUN_DIR/export, or export/ beside the .pt).

    Warnings are raised (warnings.warn) and returned, in the order they arose.
    """
    plan = plan or ExportPlan()
    notes: list[str] = []
    int8_notes: list[str] = []  # also recorded in the int8 artifact's entry

    def warn(message: str, *, int8: bool = False) -> None:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        notes.append(message)
        if int8:
            int8_notes.append(message)

    src = _resolve_source(source, out)
    model, meta = load_checkpoint(src.checkpoint)
    _keep_audited_exports(src.out, meta["model_sha256"])
    spec: ModelSpec = meta["spec"]
    bundle = _load_bundle(dataset, data_dir, meta, src, spec)
    prep = _preprocessing(meta, bundle)
    int8 = plan.int8
    if bundle is None:
        warn("no dataset known: parity is checked on random inputs in the raw value range, not real data")
        if int8 is Int8Mode.STATIC:
            int8 = Int8Mode.DYNAMIC
            warn("static int8 needs calibration data; quantised dynamically instead (pass --dataset for static)",
                 int8=True)
        inputs = random_inputs(prep, spec)
    else:
        inputs = package_inputs(bundle.test, plan=plan, seed=0, calibrate_on=CalibrationSource.TRAIN,
                                train=bundle.train)
    job = ExportJob(model, spec, _describe(src, meta, spec, bundle, prep, warn), inputs, int8, src.out,
                    tuple(int8_notes))
    with stage_package(job) as built:
        notes.extend(built.document["artifacts"][FP32_NAME].get("warnings", []))  # export_onnx has warned already
        if built.verdict is not None:
            warn(built.verdict)
        built.document = _carry_audit(src.out, built.document)
        built.publish()
    return ExportResult(src.out, built.manifest, tuple(notes))
