"""``fedunlearn bench --edge``: a tiny digits run end to end (marked slow: it trains, unlearns and exports three
models), and the pieces that need no training."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fedunlearn.common.checkpoint import load_checkpoint
from fedunlearn.common.edge.manifest import read_manifest_document
from fedunlearn.common.errors import ConfigError
from fedunlearn.simulations import bench
from fedunlearn.simulations.bench import BenchConfig, run_bench
from fedunlearn.simulations.bench_edge import METRICS, PRECISIONS, TARGETS, _misses, edge_models
from fedunlearn.simulations.cli import app

MODELS = ("original", "retrain", "remi")
FILES = ("model.pt", "model.onnx", "model.int8.onnx", "manifest.json", "bench-edge.json")
EdgeBench = tuple[Path, dict[str, Any], dict[str, Any]]  # out folder, the bench's --json, edge.json


@pytest.fixture(scope="module")
def edge_bench(tmp_path_factory: pytest.TempPathFactory) -> EdgeBench:
    out = tmp_path_factory.mktemp("edge")
    result = CliRunner().invoke(app, [
        "bench", "--dataset", "digits", "--model", "cnn", "--forget", "random:0.1", "--methods", "retrain,remi",
        "--seeds", "1", "--epochs", "8", "--train-size", "600", "--device", "cpu", "--edge", "--edge-repeats", "3",
        "--out", str(out), "--json",
    ])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout), json.loads((out / "edge.json").read_text())


@pytest.mark.slow
def test_edge_json_has_every_metric_for_every_model(edge_bench: EdgeBench) -> None:
    edge = edge_bench[2]
    assert edge["seeds"] == [0]
    assert edge["int8"] == "static"
    assert edge["metrics"] == list(METRICS)
    assert set(edge["models"]) == set(MODELS)
    seed_models = edge["per_seed"][0]["models"]
    for name in MODELS:
        for metric in METRICS:
            for key in (metric, f"{metric}_std"):
                value = edge["models"][name][key]
                assert isinstance(value, float | int) and math.isfinite(value), f"{name}.{key}"
            assert seed_models[name][metric] == edge["models"][name][metric], f"{name}.{metric}"
        assert isinstance(edge["models"][name]["misses"], list)
        assert seed_models[name]["folder"].endswith(f"edge/seed-0/{name}")


@pytest.mark.slow
def test_exports_keep_parity_and_int8_agrees(edge_bench: EdgeBench) -> None:
    for name, entry in edge_bench[2]["models"].items():
        assert entry["fp32_max_abs_diff"] <= 1e-4, name
        assert entry["int8_top1_agreement"] >= 0.9, name
        assert entry["int8_ta_drop"] == pytest.approx(entry["ta_fp32"] - entry["ta_int8"])


@pytest.mark.slow
def test_every_precision_is_audited_and_fp32_audits_like_torch(
    edge_bench: EdgeBench
) -> None:
    bench_json, edge = edge_bench[1], edge_bench[2]
    for name in MODELS:
        entry = edge["models"][name]
        for precision in PRECISIONS:
            assert 0.0 <= entry[f"mia_auc_{precision}"] <= 1.0, f"{name}.{precision}"
            assert 0.0 <= entry[f"ta_{precision}"] <= 100.0, f"{name}.{precision}"
        # torch is the bench's own mia_auc; fp32 logits differ by ~1e-6, so the same audit barely moves
        assert entry["mia_auc_torch"] == pytest.approx(bench_json["methods"][name]["mia_auc"], abs=1e-4)
        assert entry["ta_fp32"] == pytest.approx(entry["ta_torch"])
        assert abs(entry["mia_auc_fp32"] - entry["mia_auc_torch"]) <= 2e-3
        assert entry["mia_auc_int8_gap"] == pytest.approx(abs(entry["mia_auc_int8"] - entry["mia_auc_fp32"]))


@pytest.mark.slow
def test_latencies_and_sizes_are_measured(edge_bench: EdgeBench) -> None:
    for name, entry in edge_bench[2]["models"].items():
        for metric in METRICS:
            if metric.endswith("_ms") or metric.endswith("_bytes"):
                assert entry[metric] > 0, f"{name}.{metric}"
        assert entry["int8_bytes"] < entry["fp32_bytes"]
        assert entry["ort_fp32_vs_torch_b1"] == pytest.approx(entry["ort_fp32_b1_ms"] / entry["torch_b1_ms"])
    assert edge_bench[2]["cpu"]["logical_cores"] >= 1


@pytest.mark.slow
def test_each_export_folder_is_complete_and_names_its_checkpoint(
    edge_bench: EdgeBench
) -> None:
    for name in MODELS:
        folder = edge_bench[0] / "edge" / "seed-0" / name
        for file in FILES:
            assert (folder / file).is_file(), f"{name}/{file}"
        manifest = read_manifest_document(folder)
        assert manifest["source_checkpoint"] == "model.pt"
        assert set(manifest["artifacts"]) == {"model.onnx", "model.int8.onnx"}
        _, meta = load_checkpoint(folder / "model.pt")
        assert meta["model_sha256"] == manifest["parent_model_sha256"]
        assert meta["dataset"] == "digits"
        timing = json.loads((folder / "bench-edge.json").read_text())
        assert timing["repeats"] == 3
        assert timing["engines"]["torch"] is not None


@pytest.mark.slow
def test_reports_show_the_three_edge_tables(edge_bench: EdgeBench) -> None:
    section = (edge_bench[0] / "edge.md").read_text()
    assert section in (edge_bench[0] / "bench.md").read_text()
    assert section.startswith("## Edge")
    for header in ("auc int8", "int8 top-1 agreement %", "int8/fp32 b1", "int8 KiB"):
        assert header in section
    for name in MODELS:
        assert section.count(f"| {name} |") == 3
    assert json.loads((edge_bench[0] / "config.json").read_text())["edge"] is True


def test_edge_models_are_those_that_ran() -> None:
    assert edge_models(BenchConfig(methods=("retrain", "remi", "finetune"))) == MODELS
    assert edge_models(BenchConfig(methods=("finetune",))) == ("original", "retrain")


def test_targets_are_checked_both_ways() -> None:
    meets = {"fp32_max_abs_diff": 1e-6, "int8_top1_agreement": 0.995, "int8_ta_drop": 0.2,
             "mia_auc_int8_gap": 0.01, "ort_fp32_vs_torch_b1": 0.5, "int8_vs_fp32_b1": 0.4}
    assert set(meets) == set(TARGETS)
    assert _misses(meets) == []
    misses = _misses({**meets, "int8_top1_agreement": 0.98, "int8_vs_fp32_b1": 1.2})
    assert [m.split()[0] for m in misses] == ["int8_top1_agreement", "int8_vs_fp32_b1"]


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"edge_int8": "none"}, "--edge-int8"), ({"edge_int8": "fp16"}, "--edge-int8"), ({"edge_repeats": 0}, "repeats"),
])
def test_bad_edge_options_fail_before_training(changes: dict[str, Any], fragment: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started before the configuration was validated")

    monkeypatch.setattr(bench, "train", refuse)
    with pytest.raises(ConfigError, match=fragment):
        run_bench(replace(BenchConfig(edge=True), **changes))
