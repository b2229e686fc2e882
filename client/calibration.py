"""A node's record of what the audit's reference models say about its samples.

The server trains its reference models once, on data no client holds, and
sends them once (``evaluate.calibrate``). The node computes each reference's
logit confidence on every local sample (training part and hold-out) and keeps
the (K, N) table under ``<node-dir>/calibration/<digest>.npz``; every later
audit, in any round and for any request, reads the columns it needs by sample
id. Only the digest travels back. The table is derived from the node's
samples, so committed samples' columns are dropped with their data.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fedunlearn.common.audit.calibrated import Calibration
from fedunlearn.common.audit.signals import reference_statistic
from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import DataError, RequestError
from fedunlearn.common.files import atomic_write_bytes
from fedunlearn.common.models import Classifier

__all__ = ["CalibrationTable", "drop_samples"]

FOLDER = "calibration"


class CalibrationTable:
    """(K, N) reference statistics of a node's samples, looked up by sample id."""

    def __init__(self, ids: np.ndarray, statistic: np.ndarray) -> None:
        self.ids, self.statistic = ids, statistic
        self._column = {int(i): c for c, i in enumerate(ids.tolist())}

    @classmethod
    def compute(cls, references: Sequence[Classifier], data: LabeledData, *, device: torch.device) -> CalibrationTable:
        return cls(data.ids.numpy().astype(np.int64), reference_statistic(references, data, device=device))

    def save(self, node_path: Path, digest: str) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, ids=self.ids, statistic=self.statistic)
        folder = node_path / FOLDER
        folder.mkdir(mode=0o700, exist_ok=True)
        atomic_write_bytes(folder / f"{digest}.npz", buffer.getvalue())

    @classmethod
    def load(cls, node_path: Path, digest: str) -> CalibrationTable:
        if not digest or not all(c in "0123456789abcdef" for c in digest):
            raise RequestError(f"the server named no valid calibration (got {digest[:80]!r})")
        path = node_path / FOLDER / f"{digest}.npz"
        if not path.is_file():
            raise RequestError(f"this node holds no calibration {digest[:12]}; the server must send its "
                               "reference models (evaluate.calibrate) before auditing with them")
        try:
            with np.load(path, allow_pickle=False) as stored:
                return cls(stored["ids"], stored["statistic"])
        except (OSError, ValueError, KeyError) as err:
            raise DataError(f"{path} is unreadable ({err}); the server must calibrate this node again") from err

    def calibration(self, data: LabeledData) -> Calibration:
        """The offline references' view of ``data`` (none of them trained on a client's sample)."""
        missing = [i for i in data.ids.tolist() if i not in self._column]
        if missing:
            raise DataError(f"{len(missing)} samples have no reference statistics; the node must be calibrated again")
        columns = np.array([self._column[i] for i in data.ids.tolist()], dtype=np.int64)
        return Calibration.offline(self.statistic[:, columns])

    def expected(self, data: LabeledData) -> dict[int, float]:
        """Sample id -> the references' mean statistic: what a model that never saw it makes of it."""
        means = self.calibration(data).statistic.mean(axis=0)
        return {int(i): float(m) for i, m in zip(data.ids.tolist(), means, strict=True)}

    def without(self, ids: set[int]) -> CalibrationTable:
        keep = np.array([int(i) not in ids for i in self.ids.tolist()], dtype=bool)
        return CalibrationTable(self.ids[keep], self.statistic[:, keep])


def drop_samples(node_path: Path, ids: set[int]) -> None:
    """Remove committed samples' columns from every table the node keeps."""
    folder = node_path / FOLDER
    for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        CalibrationTable.load(node_path, path.stem).without(ids).save(node_path, path.stem)
