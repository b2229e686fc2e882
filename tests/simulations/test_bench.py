"""The centralised benchmark: a tiny two-seed run on digits, and validation that fails before training."""

from __future__ import annotations

import json
import math
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from common.errors import ConfigError, UnknownNameError
from common.training import TrainConfig
from common.unlearning import METHODS
from common.unlearning.remi import RemiParams
from simulations import bench
from simulations.bench import BenchConfig, run_bench
from simulations.bench_report import METRICS, write_report

CONFIG = BenchConfig(
    dataset="digits",
    model="mlp",
    forget="class:3",
    methods=("retrain", "remi", "finetune"),
    recipe=TrainConfig(epochs=3),
    seeds=2,
    device="cpu",
)
DESIGN_METRICS = ("ua", "ra", "ta", "mia_efficacy", "mia_auc", "tpr_at_1pct_fpr", "tpr_at_01pct_fpr",
                  "seconds", "avg_gap")


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], list[str]]:
    out = tmp_path_factory.mktemp("bench")
    progress: list[str] = []
    runs = run_bench(CONFIG, progress.append)
    payload = write_report(CONFIG, "cpu", runs, out)
    return out, payload, progress


@pytest.fixture(scope="module")
def saved(bench_dir: tuple[Path, dict[str, Any], list[str]]) -> dict[str, Any]:
    return json.loads((bench_dir[0] / "bench.json").read_text())


def test_bench_json_describes_the_run(saved: dict[str, Any]) -> None:
    assert saved["dataset"] == "digits"
    assert saved["model"] == "mlp"
    assert saved["forget"] == "class:3"
    assert saved["seeds"] == [0, 1]
    assert saved["device"] == "cpu"
    assert set(saved["methods"]) == {"original", "retrain", "remi", "finetune"}


def test_written_json_is_what_write_report_returned(
    bench_dir: tuple[Path, dict[str, Any], list[str]], saved: dict[str, Any]
) -> None:
    assert json.loads(json.dumps(bench_dir[1])) == saved


def test_every_method_has_every_design_metric_and_its_std(saved: dict[str, Any]) -> None:
    assert set(DESIGN_METRICS) <= set(METRICS)
    for method, entry in saved["methods"].items():
        for metric in DESIGN_METRICS:
            for key in (metric, f"{metric}_std"):
                assert key in entry, f"{method}.{key}"
                assert isinstance(entry[key], float | int) and math.isfinite(entry[key]), f"{method}.{key}"
            assert entry[f"{metric}_std"] >= 0
        for percent in ("ua", "ra", "ta", "mia_efficacy", "tpr_at_1pct_fpr", "tpr_at_01pct_fpr"):
            assert 0.0 <= entry[percent] <= 100.0, f"{method}.{percent}"
        assert 0.0 <= entry["mia_auc"] <= 1.0
        assert entry["seconds"] > 0


def test_retrain_is_the_gold_standard(saved: dict[str, Any]) -> None:
    retrain = saved["methods"]["retrain"]
    assert retrain["avg_gap"] == 0.0
    assert retrain["avg_gap_std"] == 0.0
    # a model never trained on class 3 does not predict it
    assert retrain["ua"] >= 95.0
    assert saved["methods"]["original"]["avg_gap"] > 0.0


def test_methods_record_how_they_ran_and_the_original_does_not(saved: dict[str, Any]) -> None:
    assert "stop_reason" not in saved["methods"]["original"]
    for method in ("retrain", "remi", "finetune"):
        entry = saved["methods"][method]
        assert isinstance(entry["stop_reason"], str)
        assert isinstance(entry["steps"], int)
        assert isinstance(entry["params"], dict)
    assert set(saved["methods"]["remi"]["params"]) == {f.name for f in fields(RemiParams)}


def test_report_files_exist(bench_dir: tuple[Path, dict[str, Any], list[str]]) -> None:
    out = bench_dir[0]
    for png in ("roc.png", "metrics.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    table = (out / "bench.md").read_text()
    for method in ("original", "retrain", "remi", "finetune"):
        assert f"| {method} |" in table
    for metric in DESIGN_METRICS:
        assert metric in table
    config = json.loads((out / "config.json").read_text())
    assert config["methods"] == ["retrain", "remi", "finetune"]
    assert config["forget"] == "class:3"


def test_progress_reports_each_seed_and_method(bench_dir: tuple[Path, dict[str, Any], list[str]]) -> None:
    progress = bench_dir[2]
    assert len(progress) == CONFIG.seeds * (len(CONFIG.all_methods) + 1)
    for seed in range(CONFIG.seeds):
        for method in CONFIG.all_methods:
            assert any(f"seed {seed}" in line and method in line for line in progress)


def test_retrain_is_always_run() -> None:
    assert BenchConfig(methods=("finetune",)).all_methods == ("retrain", "finetune")
    assert BenchConfig(methods=("finetune", "retrain")).all_methods == ("finetune", "retrain")


# --- validation happens before any training -------------------------------------------------------


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started before the configuration was validated")

    monkeypatch.setattr(bench, "train", refuse)
    monkeypatch.setattr("common.training.train", refuse)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"methods": ("retrain", "nope")}, ["nope", *METHODS.names()]),
        ({"methods": ("remi", "remi")}, ["twice"]),
        ({"method_params": {"remi": {"nope": "1"}}}, ["remi.nope", "lambda_kl"]),
        ({"method_params": {"remi": {"lambda_kl": "-1"}}}, ["lambda_kl"]),
        ({"method_params": {"salun": {"epochs": "1"}}}, ["salun"]),
        ({"forget": "random:1.5"}, ["random:0.1"]),
        ({"forget": "sideways:3"}, ["class:3"]),
        ({"forget": "class:12"}, ["class:12", "10 classes"]),
        ({"dataset": "nope"}, ["digits", "fashion-mnist"]),
        ({"model": "nope"}, ["mlp", "resnet18"]),
        ({"seeds": 0}, ["seeds"]),
        ({"device": "tpu"}, ["cpu", "auto"]),
    ],
)
def test_bad_configuration_fails_before_training(
    changes: dict[str, Any], expected: list[str], no_training: None
) -> None:
    with pytest.raises(ConfigError) as excinfo:
        run_bench(replace(CONFIG, **changes))
    for fragment in expected:
        assert fragment in str(excinfo.value)


def test_unknown_method_is_an_unknown_name_error(no_training: None) -> None:
    with pytest.raises(UnknownNameError):
        replace(CONFIG, methods=("nope",)).validate()


def test_the_guard_sees_training(no_training: None) -> None:
    """Without this, a guard that never fires would make the tests above pass vacuously."""
    with pytest.raises(AssertionError, match="training started"):
        run_bench(replace(CONFIG, seeds=1))

