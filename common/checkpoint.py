"""Model files: saved with their architecture, loaded tensor-only and hash-checked.

``state_sha256`` identifies a model by its weights alone (key order fixed), so
the server, the receipts and (later) the edge manifests name the same model
the same way whatever file it travels in.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from fedunlearn.common.data.tensors import DatasetBundle
from fedunlearn.common.errors import ModelError
from fedunlearn.common.models import Classifier, ModelSpec, build_model
from fedunlearn.common.nodes.storage import atomic_write_bytes, sha256_file

__all__ = ["dataset_meta", "load_checkpoint", "save_checkpoint", "state_sha256", "states_sha256"]


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16 else tensor.float().numpy().tobytes())
    return digest.hexdigest()


def states_sha256(states: Sequence[Mapping[str, torch.Tensor]]) -> str:
    """One name for an ordered set of models (the audit's references): server and nodes compute it alike."""
    digest = hashlib.sha256()
    for state in states:
        digest.update(state_sha256(state).encode())
    return digest.hexdigest()


def dataset_meta(bundle: DatasetBundle) -> dict[str, Any]:
    """Checkpoint metadata that lets ``fedunlearn edge export`` feed the model: dataset, classes, preprocessing."""
    return {"dataset": bundle.name, "class_names": list(bundle.class_names),
            "preprocessing": asdict(bundle.preprocessing)}


def save_checkpoint(path: Path, state: Mapping[str, torch.Tensor], spec: ModelSpec,
                    meta: Mapping[str, Any] | None = None) -> str:
    """Write ``path`` atomically; returns the file's sha256 (record it to check the load)."""
    buffer = io.BytesIO()
    torch.save({"spec": spec.to_dict(), "state": {k: v.detach().cpu() for k, v in state.items()},
                "model_sha256": state_sha256(state), "meta": dict(meta or {})}, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return sha256_file(Path(path))


def load_checkpoint(path: Path, *, expected_sha256: str | None = None) -> tuple[Classifier, dict[str, Any]]:
    """The model and the file's metadata; refuses a file whose hash or weights do not check out."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise ModelError(f"model file {path} does not match its recorded sha256; it is corrupt or was replaced")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        spec = ModelSpec(**blob["spec"])
        model = build_model(spec, seed=0)
        model.load_state_dict(blob["state"])
    except Exception as err:
        raise ModelError(f"model file {path} cannot be loaded ({type(err).__name__}: {err})") from err
    if state_sha256(model.state_dict()) != blob.get("model_sha256"):
        raise ModelError(f"model file {path}: weights do not match their recorded hash")
    return model, {"spec": spec, "model_sha256": blob["model_sha256"], **blob.get("meta", {})}
