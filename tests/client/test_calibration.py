"""A node's record of the references' statistics: kept once, read by id, purged with committed samples,
refused when absent or damaged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedunlearn.client.calibration import FOLDER, CalibrationTable, drop_samples
from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import DataError, RequestError
from fedunlearn.common.models import ModelSpec, build_model

DIGEST = "ab" * 32


def _data(ids: list[int]) -> LabeledData:
    return LabeledData(torch.randn(len(ids), 1, 8, 8), torch.arange(len(ids)) % 10, torch.tensor(ids))


def test_a_table_is_computed_kept_and_read_back_by_sample_id(tmp_path: Path) -> None:
    references = [build_model(ModelSpec("mlp", 1, 8, 10), seed=k) for k in range(3)]
    data = _data([5, 9, 2, 40])
    table = CalibrationTable.compute(references, data, device=torch.device("cpu"))
    assert table.statistic.shape == (3, 4)
    table.save(tmp_path, DIGEST)
    assert oct((tmp_path / FOLDER / f"{DIGEST}.npz").stat().st_mode & 0o777) == "0o600"
    loaded = CalibrationTable.load(tmp_path, DIGEST)
    picked = loaded.calibration(data.subset(torch.tensor([3, 0])))
    np.testing.assert_allclose(picked.statistic, table.statistic[:, [3, 0]])
    assert not picked.inside.any()  # offline: no reference trained on a client's sample
    expected = loaded.expected(data)
    assert expected[9] == pytest.approx(float(table.statistic[:, 1].mean()))


def test_committed_samples_leave_the_table(tmp_path: Path) -> None:
    CalibrationTable(np.array([1, 2, 3]), np.arange(6.0).reshape(2, 3)).save(tmp_path, DIGEST)
    drop_samples(tmp_path, {2})
    table = CalibrationTable.load(tmp_path, DIGEST)
    assert table.ids.tolist() == [1, 3]
    np.testing.assert_allclose(table.statistic, [[0.0, 2.0], [3.0, 5.0]])
    with pytest.raises(DataError, match="no reference statistics"):
        table.calibration(_data([2]))


def test_a_missing_bad_or_damaged_calibration_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RequestError, match="holds no calibration"):
        CalibrationTable.load(tmp_path, DIGEST)
    with pytest.raises(RequestError, match="no valid calibration"):
        CalibrationTable.load(tmp_path, "../../etc/passwd")
    (tmp_path / FOLDER).mkdir()
    (tmp_path / FOLDER / f"{DIGEST}.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="unreadable"):
        CalibrationTable.load(tmp_path, DIGEST)
