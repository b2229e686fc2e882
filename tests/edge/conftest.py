"""Shared edge fixtures: one small cnn trained briefly on 8x8 digits, its fp32 export (made once), and the cnn
saved as a run directory (``make_run_dir`` in tests/edge/exports.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from fedunlearn.common.data.datasets import load_dataset
from fedunlearn.common.data.tensors import DatasetBundle
from fedunlearn.common.edge.export import ExportInfo, export_onnx
from fedunlearn.common.models import Classifier, ModelSpec, build_model
from fedunlearn.common.training import TrainConfig, seed_everything, train
from tests.edge.exports import make_run_dir


@pytest.fixture(scope="session")
def digits() -> DatasetBundle:
    return load_dataset("digits", root=None, download=False, seed=0)


@pytest.fixture(scope="session")
def digits_spec() -> ModelSpec:
    return ModelSpec("cnn", 1, 8, 10)


@pytest.fixture(scope="session")
def digits_cnn(digits: DatasetBundle, digits_spec: ModelSpec) -> Classifier:
    """A cnn that has learned something (around 90 % test accuracy), so int8 agreement means something."""
    model = build_model(digits_spec, seed=0)
    train(model, digits.train, TrainConfig(epochs=3, batch_size=64), device=torch.device("cpu"),
          generator=seed_everything(0))
    return model.eval()


@pytest.fixture(scope="session")
def digits_cnn_export(tmp_path_factory: pytest.TempPathFactory, digits_cnn: Classifier, digits_spec: ModelSpec,
                      digits: DatasetBundle) -> ExportInfo:
    """``digits_cnn`` exported once (parity on 64 test images). Read only: its folder holds model.onnx alone."""
    path = tmp_path_factory.mktemp("digits-cnn-export") / "model.onnx"
    return export_onnx(digits_cnn, digits_spec, path, example=digits.test.x[:64])


@pytest.fixture
def run_dir(tmp_path: Path, digits_cnn: Classifier, digits_spec: ModelSpec) -> Path:
    return make_run_dir(tmp_path / "run", digits_cnn, digits_spec)


@pytest.fixture
def dynamo_breaks(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.onnx.export raises whenever the dynamo exporter is asked for; TorchScript still works."""
    real_export = torch.onnx.export

    def export(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("dynamo"):
            raise RuntimeError("simulated dynamo failure")
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", export)
