"""Hash-checked, crash-safe tensor files inside a node directory.

A data file is written under a name that contains its own sha256 and only then
referenced from ``node.json`` (replaced atomically), so a crash leaves either
the old or the new file referenced, never a half-written one; files nobody
references any more are removed on the next open.

Everything here is personal data: folders are made 0700 and files 0600 whatever
the umask, and each file is fsync'd, renamed into place, and its folder fsync'd,
so a crash right after ``write_samples`` returns cannot lose the rename.

torch is imported by the two sample functions alone: filing a request reads only
``node.json`` and the sample index (``index.py``), and starts without it.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedunlearn.common.errors import DataError
from fedunlearn.common.files import atomic_write_bytes, sha256_file

if TYPE_CHECKING:
    from fedunlearn.common.data.tensors import LabeledData

__all__ = ["PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "atomic_write_bytes", "atomic_write_json", "private_dir",
           "read_addressed", "read_json", "read_samples", "sha256_file", "write_addressed", "write_samples"]

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600  # atomic_write_bytes' default


def private_dir(path: Path) -> Path:
    """``path`` created if needed (its parents as ``mkdir -p`` would) and set to 0700, even if it existed."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    path.chmod(PRIVATE_DIR_MODE)
    return path


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise DataError(f"{path} is missing") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}); the node directory is damaged") from err


def write_addressed(directory: Path, stem: str, suffix: str, payload: bytes) -> dict[str, str]:
    """Save ``payload`` as ``<stem>-<sha12><suffix>`` (0600, in a 0700 folder); returns the reference for
    node.json. The name holds the hash, so the bytes are complete before the file is named."""
    digest = hashlib.sha256(payload).hexdigest()
    final = private_dir(directory) / f"{stem}-{digest[:12]}{suffix}"
    atomic_write_bytes(final, payload, mode=PRIVATE_FILE_MODE)
    return {"path": final.name, "sha256": digest}


def read_addressed(directory: Path, ref: dict[str, str]) -> bytes:
    """The bytes of a referenced file, read once and checked against its recorded sha256."""
    path = directory / ref["path"]
    try:
        payload = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path} is missing; the node directory is damaged (restore it from a backup, or "
                        "re-create it with `node init`)") from None
    if hashlib.sha256(payload).hexdigest() != ref["sha256"]:
        raise DataError(f"{path} does not match its recorded sha256; the file is corrupt")
    return payload


def write_samples(directory: Path, stem: str, data: LabeledData) -> dict[str, str]:
    """Save samples as ``<stem>-<sha12>.pt``; returns the reference for node.json."""
    import torch

    buffer = io.BytesIO()
    torch.save({"x": data.x.contiguous(), "y": data.y, "ids": data.ids}, buffer)
    return write_addressed(directory, stem, ".pt", buffer.getvalue())


def read_samples(directory: Path, ref: dict[str, str]) -> LabeledData:
    """Load a referenced sample file after checking its hash (tensors only, no pickle)."""
    import torch

    from fedunlearn.common.data.tensors import LabeledData

    payload = read_addressed(directory, ref)
    try:
        blob = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        return LabeledData(blob["x"], blob["y"], blob["ids"])
    except Exception as err:  # a file whose hash matches but still fails to load was written wrong
        raise DataError(f"{directory / ref['path']} cannot be read as node samples ({err})") from err
