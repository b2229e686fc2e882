"""manifest.json: one per export folder, describing every artifact in it (docs/edge-contract.md).

This is the writing side (export, federation, bench). Devices read manifests
with ``common.edge.runtime``, which must stay one copyable file, so the format
and file names are defined there and taken from it here. Here a manifest is
the JSON document itself, a dict; every function returns a new dict and leaves
its argument as it was. Its typed reading is the runtime's ``Manifest``, which
is what the export pipeline hands its callers.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedunlearn.common.edge.runtime import MANIFEST_FORMAT, MANIFEST_NAME
from fedunlearn.common.errors import DataError, ModelError
from fedunlearn.common.files import atomic_write_bytes, sha256_file

__all__ = [
    "FORMAT",
    "MANIFEST_NAME",
    "RawPreprocessing",
    "manifest_path_for",
    "new_manifest",
    "package_versions",
    "read_manifest_document",
    "remove_artifact",
    "request_summary",
    "set_artifact",
    "set_audit",
    "validate_manifest",
    "verify_artifact",
    "write_manifest",
]

FORMAT = MANIFEST_FORMAT  # the device runtime's, which must stay a single copyable file
_VERSIONED = ("fedunlearn", "torch", "onnx", "onnxruntime")
_REQUEST_KINDS = {"ids": "sample", "sample": "sample", "class": "class", "all": "all"}
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Top-level keys and the JSON types they must have; the runtime relies on every one of them.
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "format": str, "created": str, "architecture": str, "num_classes": int, "class_names": list,
    "input": dict, "output": dict, "preprocessing": dict, "parent_model_sha256": str,
    "source_checkpoint": (str, type(None)), "requests": list, "audit": dict, "versions": dict, "artifacts": dict,
}
_ARTIFACT_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "sha256": str, "bytes": int, "precision": str, "parent_sha256": str, "parity": dict,
}


@dataclass(frozen=True)
class RawPreprocessing:
    """model input = (raw / scale - mean[c]) / std[c] per channel c, for raw in [raw_min, raw_max]."""

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    raw_min: float
    raw_max: float

    def to_dict(self) -> dict[str, Any]:
        return {"scale": float(self.scale), "mean": [float(m) for m in self.mean],
                "std": [float(s) for s in self.std], "raw_min": float(self.raw_min), "raw_max": float(self.raw_max)}


def package_versions(packages: Sequence[str] = _VERSIONED) -> dict[str, str | None]:
    """Installed versions of ``packages`` (None: not installed), and Python's."""
    found: dict[str, str | None] = {}
    for package in packages:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    found["python"] = platform.python_version()
    return found


def request_summary(requests: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Forget requests as a manifest may show them: id, kind, count, status and nothing else (never ids).

    The ledger's kind ``ids`` is called ``sample`` on the edge.
    """
    rows = []
    for request in requests:
        kind = _REQUEST_KINDS.get(str(request.get("kind")))
        if kind is None or "request_id" not in request:
            raise DataError(f"forget request {dict(request)!r} has no request_id or an unknown kind "
                            f"(expected one of {sorted(_REQUEST_KINDS)})")
        rows.append({"request_id": str(request["request_id"]), "kind": kind,
                     "num_samples": int(request.get("num_samples", 0)), "status": str(request.get("status"))})
    return rows


def new_manifest(*, architecture: str, num_classes: int, class_names: Sequence[str],
                 input_shape: tuple[int, int, int], preprocessing: RawPreprocessing, parent_model_sha256: str,
                 source_checkpoint: str | None, requests: Sequence[Mapping[str, Any]] = (),
                 created: datetime | None = None) -> dict[str, Any]:
    """A manifest with no artifacts yet; ``input_shape`` is one sample's (C, H, W)."""
    if len(class_names) != num_classes:
        raise DataError(f"{len(class_names)} class names for a {num_classes}-class model")
    if len(preprocessing.mean) != input_shape[0] or len(preprocessing.std) != input_shape[0]:
        raise DataError(f"preprocessing has {len(preprocessing.mean)} means / {len(preprocessing.std)} stds "
                        f"for {input_shape[0]} input channels")
    stamp = (created or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "format": FORMAT,
        "created": stamp,
        "architecture": architecture,
        "num_classes": int(num_classes),
        "class_names": [str(n) for n in class_names],
        "input": {"name": "input", "shape": [None, *map(int, input_shape)], "dtype": "float32"},
        "output": {"name": "logits", "shape": [None, int(num_classes)], "dtype": "float32"},
        "preprocessing": preprocessing.to_dict(),
        "parent_model_sha256": parent_model_sha256,
        "source_checkpoint": source_checkpoint,
        "requests": request_summary(requests),
        "audit": {},
        "versions": package_versions(),
        "artifacts": {},
    }


def set_artifact(manifest: Mapping[str, Any], name: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """Add or replace ``artifacts[name]``; its ``audit`` survives if the new entry has the same sha256."""
    missing = [k for k in _ARTIFACT_REQUIRED if k not in entry]
    if missing:
        raise DataError(f"artifact entry {name!r} lacks {missing}")
    updated = copy.deepcopy(dict(manifest))
    artifacts = updated.setdefault("artifacts", {})
    previous = artifacts.get(name, {})
    artifacts[name] = copy.deepcopy(dict(entry))
    if "audit" in previous and "audit" not in entry and previous.get("sha256") == entry["sha256"]:
        artifacts[name]["audit"] = previous["audit"]
    return updated


def remove_artifact(manifest: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``manifest`` without ``artifacts[name]``: a file that is not published is not described either."""
    updated = copy.deepcopy(dict(manifest))
    artifacts = updated.get("artifacts", {})
    if artifacts.pop(name, None) is None:
        raise ModelError(f"manifest has no artifact {name!r} to remove; it lists {sorted(artifacts)}")
    return updated


def set_audit(manifest: Mapping[str, Any], audit: Mapping[str, Any], *,
              artifact: str | None = None) -> dict[str, Any]:
    """Set the top-level ``audit`` (artifact=None) or ``artifacts[artifact]["audit"]`` (the federation's figures)."""
    updated = copy.deepcopy(dict(manifest))
    if artifact is None:
        updated["audit"] = copy.deepcopy(dict(audit))
    elif artifact in updated.get("artifacts", {}):
        updated["artifacts"][artifact]["audit"] = copy.deepcopy(dict(audit))
    else:
        raise ModelError(f"manifest has no artifact {artifact!r} to audit; it lists "
                         f"{sorted(updated.get('artifacts', {}))}")
    return updated


def write_manifest(directory: Path, manifest: Mapping[str, Any]) -> Path:
    """Validate, then write ``directory/manifest.json`` atomically (temp file, fsync, os.replace)."""
    path = Path(directory) / MANIFEST_NAME
    validate_manifest(manifest, f"manifest {path}")
    payload = (json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
    atomic_write_bytes(path, payload, mode=0o644)  # it ships to devices beside its model
    return path


def manifest_path_for(artifact: Path) -> Path:
    """The manifest that describes ``artifact``: the one in the same folder."""
    return Path(artifact).parent / MANIFEST_NAME


def read_manifest_document(path: Path) -> dict[str, Any]:
    """Load and validate a manifest file (or the manifest.json in a folder) as the JSON document the export
    writes and amends; DataError says what is wrong. A device reads it typed, with ``runtime.read_manifest``."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise DataError(f"manifest {path} is missing; export the model again (`fedunlearn edge export`)") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"manifest {path} is not valid JSON ({err}); export the model again") from err
    validate_manifest(manifest, f"manifest {path}")
    return dict(manifest)


def validate_manifest(manifest: Any, where: str = "manifest") -> None:
    """DataError naming the missing or mistyped keys; what read_manifest_document and write_manifest check."""
    if not isinstance(manifest, Mapping):
        raise DataError(f"{where} must hold a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        raise DataError(f"{where} has format {manifest.get('format')!r}; this version reads {FORMAT!r}")
    _check_keys(manifest, _REQUIRED, where)
    for name, entry in manifest["artifacts"].items():
        entry_where = f"{where}, artifacts[{name!r}]"
        if not isinstance(entry, Mapping):
            raise DataError(f"{entry_where} must be an object")
        _check_keys(entry, _ARTIFACT_REQUIRED, entry_where)
        if not _SHA256.fullmatch(entry["sha256"]):
            raise DataError(f"{entry_where}.sha256 is not a sha256 hex digest: {entry['sha256']!r}")


def _check_keys(obj: Mapping[str, Any], required: Mapping[str, type | tuple[type, ...]], where: str) -> None:
    missing = [k for k in required if k not in obj]
    if missing:
        raise DataError(f"{where} lacks {missing}; export the model again")
    wrong = [k for k, kind in required.items() if not isinstance(obj[k], kind) or isinstance(obj[k], bool)]
    if wrong:
        raise DataError(f"{where} has keys of the wrong type: {wrong}")


def verify_artifact(artifact: Path, manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Check ``artifact``'s bytes against its manifest entry (read from beside it unless given); the entry.

    Call this BEFORE handing the file to an inference session: ModelError if the file is missing,
    not listed, or its sha256 differs.
    """
    artifact = Path(artifact)
    listed = read_manifest_document(manifest_path_for(artifact)) if manifest is None else manifest
    entry = listed.get("artifacts", {}).get(artifact.name)
    if entry is None:
        raise ModelError(f"{artifact.name} is not listed in its manifest (it lists "
                         f"{sorted(listed.get('artifacts', {}))}); refusing to load it")
    if not artifact.is_file():
        raise ModelError(f"model file {artifact} does not exist")
    digest = sha256_file(artifact)
    if digest != entry["sha256"]:
        raise ModelError(f"{artifact} does not match its manifest (sha256 {digest[:12]}..., manifest says "
                         f"{str(entry['sha256'])[:12]}...); it is corrupt or was replaced: export again")
    return dict(entry)

