"""Shared edge fixtures: one small cnn trained briefly on 8x8 digits, saved as a run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from common.checkpoint import save_checkpoint
from common.data.datasets import load_dataset
from common.data.tensors import DatasetBundle
from common.models import Classifier, ModelSpec, build_model
from common.training import TrainConfig, seed_everything, train


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
