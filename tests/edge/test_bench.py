"""``fedunlearn edge latency``: one small run through the command, and the checks that stop a misleading
comparison."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
from typer.testing import CliRunner

from fedunlearn.common.checkpoint import save_checkpoint
from fedunlearn.common.edge.bench import run_edge_bench
from fedunlearn.common.edge.runtime import EdgeModelError
from fedunlearn.common.errors import ConfigError, ModelError
from fedunlearn.common.models import build_model
from fedunlearn.simulations.cli import app as fedunlearn
from fedunlearn.simulations.edge_cli import latency_command
from tests.edge.exports import SPEC, copy_export, write_manifest

LATENCY_KEYS = {"median_ms", "p90_ms"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, edge_export: Path) -> Path:
    return copy_export(edge_export, tmp_path_factory.mktemp("bench-edge"), int8=True)


@pytest.fixture(scope="module")
def report(built: Path) -> dict[str, Any]:
    result = CliRunner().invoke(fedunlearn, ["edge", "latency", str(built / "model.onnx"), "--repeats", "3",
                                             "--torch-model", str(built.parent / "model.pt")])
    assert result.exit_code == 0, result.output
    assert "ort_int8" in result.output and "bench-edge.json" in result.output
    return json.loads((built / "bench-edge.json").read_text())


def test_json_has_every_engine_with_positive_latencies(report: dict[str, Any]) -> None:
    assert report["format"] == "fedunlearn-bench-edge/1"
    assert set(report["engines"]) == {"torch", "ort_fp32", "ort_int8"}
    for name, engine in report["engines"].items():
        for batch in ("b1", "b32"):
            assert set(engine[batch]) == LATENCY_KEYS, name
            assert 0 < engine[batch]["median_ms"] <= engine[batch]["p90_ms"], name
        assert engine["throughput_b32"] > 0 and engine["bytes"] > 0
    assert report["engines"]["ort_fp32"]["max_abs_diff"] < 1e-4
    assert report["engines"]["ort_fp32"]["top1_agreement"] == 1.0
    assert report["engines"]["ort_int8"]["top1_agreement"] >= 0.5


def test_json_records_ratios_sizes_threads_cpu_and_versions(report: dict[str, Any]) -> None:
    ratios = report["ratios"]
    assert set(ratios) == {"ort_fp32_vs_torch_b1", "int8_vs_fp32_b1"} and all(v > 0 for v in ratios.values())
    engines = report["engines"]
    assert ratios["int8_vs_fp32_b1"] == pytest.approx(
        engines["ort_int8"]["b1"]["median_ms"] / engines["ort_fp32"]["b1"]["median_ms"])
    assert report["sizes"]["int8_bytes"] < report["sizes"]["fp32_bytes"]
    assert report["threads"]["torch_intra_op"] == 1 and report["threads"]["ort_intra_op"] == 1
    assert report["cpu"]["model"] and report["cpu"]["logical_cores"] >= 1
    assert {"python", "numpy", "torch", "onnxruntime", "onnx", "fedunlearn"} <= set(report["versions"])
    assert report["repeats"] == 3 and report["input_shape"] == [None, 1, 8, 8]


def test_torch_thread_count_is_restored(built: Path) -> None:
    torch.set_num_threads(2)
    try:
        run_edge_bench(built / "model.onnx", repeats=1, warmup=0, torch_model=built.parent / "model.pt")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_a_checkpoint_with_other_weights_is_refused(built: Path, tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "other.pt", build_model(SPEC, seed=1).state_dict(), SPEC)
    with pytest.raises(ModelError, match="pass the matching checkpoint with --torch-model"):
        run_edge_bench(built / "model.onnx", repeats=1, torch_model=tmp_path / "other.pt")


def test_without_a_checkpoint_torch_is_left_out(built: Path, tmp_path: Path) -> None:
    export = Path(shutil.copytree(built, tmp_path / "export"))
    (export / "model.int8.onnx").unlink()
    write_manifest(export, source_checkpoint=None)
    result = run_edge_bench(export / "model.onnx", repeats=1, warmup=0)
    assert result.engines["torch"] is None and result.engines["ort_int8"] is None
    assert result.ratios == {"ort_fp32_vs_torch_b1": None, "int8_vs_fp32_b1": None}
    write_manifest(export, source_checkpoint="gone.pt")
    with pytest.raises(ModelError, match=r"gone\.pt does not exist; pass the checkpoint with --torch-model"):
        run_edge_bench(export / "model.onnx", repeats=1)


def test_bad_settings_are_refused(built: Path) -> None:
    with pytest.raises(ConfigError, match="repeats must be >= 1"):
        run_edge_bench(built / "model.onnx", repeats=0)
    with pytest.raises(ConfigError, match="edge latency takes the fp32 model"):
        run_edge_bench(built / "model.int8.onnx", repeats=1)


def test_manifest_paths_are_only_followed_inside_the_export_folder(built: Path, tmp_path: Path) -> None:
    export = Path(shutil.copytree(built, tmp_path / "export"))
    with pytest.raises(ModelError, match=r"source_checkpoint '\.\./model\.pt' is not a file inside the export "
                                         r"folder.*pass it with --torch-model"):
        run_edge_bench(export / "model.onnx", repeats=1)  # the federation layout: the user must vouch for it
    write_manifest(export, source_checkpoint="/etc/passwd")
    with pytest.raises(ModelError, match=r"source_checkpoint '/etc/passwd' is not a file inside"):
        run_edge_bench(export / "model.onnx", repeats=1)
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["source_checkpoint"] = None
    manifest["artifacts"][str(built / "model.int8.onnx")] = manifest["artifacts"].pop("model.int8.onnx")
    (export / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgeModelError, match=r"int8 artifact '/.*model\.int8\.onnx' is not a file inside"):
        run_edge_bench(export / "model.onnx", repeats=1)


def test_latency_refuses_a_manifest_path_outside_the_folder(built: Path, tmp_path: Path) -> None:
    export = Path(shutil.copytree(built, tmp_path / "export"))
    write_manifest(export, source_checkpoint="../../../../etc/passwd")
    app = typer.Typer()
    app.command()(latency_command)
    result = CliRunner().invoke(app, [str(export / "model.onnx"), "--repeats", "1"])
    assert isinstance(result.exception, ModelError) and "not a file inside the export folder" in str(result.exception)


def test_the_old_bench_edge_spelling_still_times_and_warns(built: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(fedunlearn, ["bench-edge", str(built / "model.onnx"), "--repeats", "1",
                                             "--torch-model", str(built.parent / "model.pt"),
                                             "--out", str(tmp_path / "latency.json"), "--json"])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == ("warning: `fedunlearn bench-edge` is deprecated and goes in the next release; "
                                     "use `fedunlearn edge latency`")
    assert json.loads(result.stdout) == json.loads((tmp_path / "latency.json").read_text())
