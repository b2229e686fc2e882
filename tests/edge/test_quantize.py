"""int8 quantisation: both modes give files ONNX Runtime runs, close to fp32, measured honestly."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from fedunlearn.common.data.tensors import DatasetBundle
from fedunlearn.common.edge.export import ExportInfo
from fedunlearn.common.edge.quantize import QuantizeInfo, int8_agreement, quantize_int8
from fedunlearn.common.errors import ConfigError, ModelError


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory, digits_cnn_export: ExportInfo) -> ExportInfo:
    """The session's export of digits_cnn, copied: the int8 files are written beside it."""
    path = tmp_path_factory.mktemp("fp32") / "model.onnx"
    shutil.copy(digits_cnn_export.path, path)
    return replace(digits_cnn_export, path=path)


@pytest.fixture(scope="module")
def static(fp32: ExportInfo, digits: DatasetBundle) -> QuantizeInfo:
    return quantize_int8(fp32.path, fp32.path.parent / "model.int8.onnx", mode="static",
                         calibration=digits.train.x[:256].numpy(), evaluation=digits.test.x.numpy(),
                         labels=digits.test.y.numpy())


def _runs(path: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": batch})[0]


def test_static_int8_is_qdq_close_to_fp32_and_smaller(static: QuantizeInfo, fp32: ExportInfo,
                                                      digits: DatasetBundle) -> None:
    assert static.precision == "int8-static" and static.calibration_samples == 256
    assert static.parent_sha256 == fp32.sha256
    agreement = static.agreement
    assert agreement.samples == len(digits.test)
    assert agreement.top1_agreement >= 0.95
    assert agreement.fp32_accuracy is not None and agreement.int8_accuracy is not None
    assert agreement.fp32_accuracy - agreement.int8_accuracy <= 3.0
    ops = {node.op_type for node in onnx.load(str(static.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert static.bytes < fp32.bytes / 2
    for size in (1, 7):
        assert _runs(static.path, digits.test.x[:size].numpy()).shape == (size, 10)


def test_the_reported_figures_are_reproducible(static: QuantizeInfo, fp32: ExportInfo,
                                               digits: DatasetBundle) -> None:
    x = digits.test.x.numpy()
    a, b = _runs(fp32.path, x), _runs(static.path, x)
    assert static.agreement.top1_agreement == pytest.approx(float((a.argmax(1) == b.argmax(1)).mean()))
    assert static.agreement.max_abs_diff == pytest.approx(float(np.abs(a - b).max()), rel=1e-5)
    again = int8_agreement(fp32.path, static.path, x, digits.test.y.numpy())
    assert again == static.agreement


def test_dynamic_int8_needs_no_data(fp32: ExportInfo, digits: DatasetBundle, tmp_path: Path) -> None:
    info = quantize_int8(fp32.path, tmp_path / "model.int8.onnx", mode="dynamic", calibration=None,
                         evaluation=digits.test.x[:200].numpy())
    assert info.precision == "int8-dynamic" and info.calibration_samples == 0
    assert info.agreement.top1_agreement >= 0.95
    assert info.agreement.fp32_accuracy is None and info.agreement.int8_accuracy is None
    assert info.bytes < fp32.bytes
    assert _runs(info.path, digits.test.x[:1].numpy()).shape == (1, 10)
    assert [p.name for p in tmp_path.iterdir()] == ["model.int8.onnx"]


def test_static_without_calibration_is_refused(fp32: ExportInfo, digits: DatasetBundle, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="calibration"):
        quantize_int8(fp32.path, tmp_path / "q.onnx", mode="static", calibration=None,
                      evaluation=digits.test.x[:8].numpy())
    with pytest.raises(ConfigError, match="one label each"):
        quantize_int8(fp32.path, tmp_path / "q.onnx", mode="dynamic", calibration=None,
                      evaluation=digits.test.x[:8].numpy(), labels=digits.test.y[:7].numpy())
    assert not list(tmp_path.iterdir())


def test_a_broken_fp32_model_leaves_the_old_int8_file(digits: DatasetBundle, tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not an onnx model")
    old = tmp_path / "model.int8.onnx"
    old.write_bytes(b"an earlier int8 model")
    with pytest.raises(ModelError, match="int8 quantisation"):
        quantize_int8(tmp_path / "model.onnx", old, mode="dynamic", calibration=None,
                      evaluation=digits.test.x[:8].numpy())
    assert old.read_bytes() == b"an earlier int8 model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.int8.onnx", "model.onnx"]
    with pytest.raises(ModelError, match="does not exist"):
        quantize_int8(tmp_path / "missing.onnx", old, mode="dynamic", calibration=None,
                      evaluation=digits.test.x[:8].numpy())
