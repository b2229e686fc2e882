"""fp32 ONNX export: parity with torch, the input/output contract, the fallback, and never a half-written file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import fedunlearn.common.edge.export as export_module
from fedunlearn.common.data.tensors import DatasetBundle
from fedunlearn.common.edge.export import ExportInfo, export_onnx
from fedunlearn.common.errors import ModelError
from fedunlearn.common.models import Classifier, ModelSpec


@pytest.fixture
def exported(digits_cnn_export: ExportInfo) -> ExportInfo:
    return digits_cnn_export


def _logits(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x.numpy()})[0]


def test_cnn_on_digits_matches_torch(exported: ExportInfo, digits_cnn: Classifier, digits: DatasetBundle) -> None:
    assert exported.exporter == "dynamo" and exported.opset == 18 and not exported.warnings
    assert exported.max_abs_diff <= 1e-4 and exported.samples == 64
    assert exported.batch_sizes == (1, 7, 64)
    # Check it independently too, on test samples the export never saw.
    x = digits.test.x[100:300]
    with torch.no_grad():
        expected = digits_cnn(x).numpy()
    assert np.abs(_logits(exported.path, x) - expected).max() <= 1e-4


def test_the_batch_dimension_is_dynamic(exported: ExportInfo, digits: DatasetBundle) -> None:
    for size in (1, 7, 33):
        assert _logits(exported.path, digits.test.x[:size]).shape == (size, 10)
    proto = onnx.load(str(exported.path))
    (graph_input,), (graph_output,) = proto.graph.input, proto.graph.output
    assert (graph_input.name, graph_output.name) == ("input", "logits")
    in_dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in graph_output.type.tensor_type.shape.dim]
    assert isinstance(in_dims[0], str) and in_dims[1:] == [1, 8, 8]
    assert isinstance(out_dims[0], str) and out_dims[1:] == [10]


def test_one_file_and_the_reported_hash(exported: ExportInfo) -> None:
    assert sorted(p.name for p in exported.path.parent.iterdir()) == ["model.onnx"]  # no sidecar, no temp left
    assert exported.bytes == exported.path.stat().st_size
    import hashlib

    assert exported.sha256 == hashlib.sha256(exported.path.read_bytes()).hexdigest()


def test_export_does_not_touch_the_callers_model(digits_cnn: Classifier, digits_spec: ModelSpec,
                                                 digits: DatasetBundle, tmp_path: Path) -> None:
    digits_cnn.train()
    try:
        export_onnx(digits_cnn, digits_spec, tmp_path / "m.onnx", example=digits.test.x[:1])  # one row is enough
        assert digits_cnn.training
    finally:
        digits_cnn.eval()


@pytest.mark.usefixtures("dynamo_breaks")
def test_a_dynamo_failure_falls_back_to_torchscript_with_a_warning(
        digits_cnn: Classifier, digits_spec: ModelSpec, digits: DatasetBundle, tmp_path: Path) -> None:
    with pytest.warns(RuntimeWarning, match="fell back to the TorchScript exporter"):
        info = export_onnx(digits_cnn, digits_spec, tmp_path / "model.onnx", example=digits.test.x[:16])
    assert info.exporter == "torchscript"
    assert info.warnings and "simulated dynamo failure" in info.warnings[0]
    assert info.max_abs_diff <= 1e-4
    assert _logits(info.path, digits.test.x[:1]).shape == (1, 10)


def test_external_data_is_folded_into_one_file(monkeypatch: pytest.MonkeyPatch, digits_cnn: Classifier,
                                               digits_spec: ModelSpec, digits: DatasetBundle,
                                               tmp_path: Path) -> None:
    real_export = torch.onnx.export

    def with_sidecar(*args: Any, **kwargs: Any) -> Any:
        return real_export(*args, **{**kwargs, "external_data": True})

    monkeypatch.setattr(torch.onnx, "export", with_sidecar)
    info = export_onnx(digits_cnn, digits_spec, tmp_path / "model.onnx", example=digits.test.x[:16])
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    proto = onnx.load(str(info.path), load_external_data=False)
    assert all(not init.external_data for init in proto.graph.initializer)
    assert info.max_abs_diff <= 1e-4


def _good_file(path: Path) -> bytes:
    path.write_bytes(b"a good model.onnx from an earlier export")
    return path.read_bytes()


def test_failed_parity_leaves_the_old_file_byte_identical(monkeypatch: pytest.MonkeyPatch, digits_cnn: Classifier,
                                                         digits_spec: ModelSpec, digits: DatasetBundle,
                                                         tmp_path: Path) -> None:
    before = _good_file(tmp_path / "model.onnx")
    monkeypatch.setattr(export_module, "_parity",
                        lambda module, draft, example, rtol: export_module._Parity(0.5, 3.0, 0.5, (1,)))
    with pytest.raises(ModelError, match="disagrees with torch"):
        export_onnx(digits_cnn, digits_spec, tmp_path / "model.onnx", example=digits.test.x[:8])
    assert (tmp_path / "model.onnx").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_both_exporters_failing_is_a_model_error(monkeypatch: pytest.MonkeyPatch, digits_cnn: Classifier,
                                                 digits_spec: ModelSpec, digits: DatasetBundle,
                                                 tmp_path: Path) -> None:
    before = _good_file(tmp_path / "model.onnx")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.warns(RuntimeWarning), pytest.raises(ModelError, match="which failed too"):
        export_onnx(digits_cnn, digits_spec, tmp_path / "model.onnx", example=digits.test.x[:8])
    assert (tmp_path / "model.onnx").read_bytes() == before


def test_an_example_of_the_wrong_shape_is_refused(digits_cnn: Classifier, digits_spec: ModelSpec,
                                                  tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"\(N, 1, 8, 8\)"):
        export_onnx(digits_cnn, digits_spec, tmp_path / "model.onnx", example=torch.zeros(4, 3, 8, 8))
    assert not (tmp_path / "model.onnx").exists()
