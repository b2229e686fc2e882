"""The matrix: its cells, running and keeping them, and the summary read back from their bench.json.

The tests that run cells are slow (two tiny benches end to end); the cells' definitions are checked in the
default set."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fedunlearn.common.errors import ConfigError
from fedunlearn.simulations import bench_matrix, bench_pipeline
from fedunlearn.simulations.bench_matrix import CELLS, Cell, run_matrix, select_cells

TINY = (Cell("digits", "mlp", "random:0.1", 200, 1, ulira_shadows=4), Cell("digits", "mlp", "class:3", 200, 1))


def test_the_matrix_is_four_architectures_by_two_datasets_by_two_requests() -> None:
    assert len(CELLS) == 16 and len({cell.name for cell in CELLS}) == 16
    assert {(c.dataset, c.model) for c in CELLS} == {(d, m) for d in ("digits", "fashion-mnist")
                                                     for m in ("mlp", "cnn", "resnet18", "mobilenet_v3_small")}
    for cell in CELLS:
        cell.config(device="cpu", data_root=None).validate()
        assert (cell.ulira_shadows > 0) == cell.forget.startswith("random:"), cell.name


def test_select_cells_by_pattern() -> None:
    assert [c.name for c in select_cells(["digits-cnn-*"])] == ["digits-cnn-random0.1", "digits-cnn-class3"]
    assert select_cells([]) == list(CELLS)
    with pytest.raises(ConfigError, match="no cell matches"):
        select_cells(["cifar*"])


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("matrix")
    summary = run_matrix(TINY, out, device="cpu", command="python -m fedunlearn.simulations.bench_matrix --test")
    return out, summary


@pytest.mark.slow  # two tiny benches end to end, U-LiRA included
def test_every_cell_is_a_bench_run_with_its_caps(matrix: tuple[Path, dict[str, Any]]) -> None:
    out, _ = matrix
    for cell in TINY:
        bench = json.loads((out / cell.name / "bench.json").read_text())
        assert (bench["dataset"], bench["model"], bench["forget"]) == (cell.dataset, cell.model, cell.forget)
        assert bench["config"]["train_size"] == 200 and bench["config"]["recipe"]["epochs"] == 1
        assert (bench["ulira"] is not None) == (cell.ulira_shadows > 0)
        assert (out / cell.name / "bench.md").is_file()


@pytest.mark.slow  # two tiny benches end to end, U-LiRA included
def test_the_summary_is_read_from_the_cells(matrix: tuple[Path, dict[str, Any]]) -> None:
    out, summary = matrix
    assert json.loads((out / "matrix.json").read_text()) == summary
    random_cell = summary["cells"]["digits-mlp-random0.1"]
    bench = json.loads((out / "digits-mlp-random0.1" / "bench.json").read_text())
    methods = bench["methods"]
    assert random_cell["remi_avg_gap"] == methods["remi"]["avg_gap"]
    assert random_cell["remi_time_ratio"] == round(methods["remi"]["seconds"] / methods["retrain"]["seconds"], 4)
    others = {m: e["avg_gap"] for m, e in methods.items() if m not in ("original", "retrain", "remi")}
    assert random_cell["best_other"] == {"method": min(others, key=others.__getitem__), "value": min(others.values())}
    assert random_cell["remi_ulira"] == methods["remi"]["ulira"]["accuracy"]
    assert summary["cells"]["digits-mlp-class3"]["remi_ulira"] is None
    assert summary["missing"] == [] and summary["command"].endswith("--test")
    markdown = (out / "matrix.md").read_text()
    assert "[digits-mlp-class3](digits-mlp-class3/bench.md)" in markdown


@pytest.mark.slow  # two tiny benches end to end, U-LiRA included
def test_a_cell_already_run_is_kept_and_a_changed_one_runs_again(matrix: tuple[Path, dict[str, Any]],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out, _ = matrix
    ran: list[str] = []
    monkeypatch.setattr(bench_pipeline, "run_and_report", lambda config, path, **_: ran.append(path.name))
    changed = replace(TINY[1], epochs=2)
    summary = run_matrix((*TINY, changed), out, device="cpu")
    assert ran == [changed.name] == [TINY[1].name]  # same name, other recipe: its bench.json does not fit it
    assert summary["missing"] == [changed.name]  # nor does the summary take it for the changed cell


@pytest.mark.slow  # two tiny benches end to end, U-LiRA included
def test_cells_not_yet_run_are_listed_as_missing(matrix: tuple[Path, dict[str, Any]]) -> None:
    out, _ = matrix
    bench_matrix.main(["--out", str(out), "--summary-only"])
    summary = json.loads((out / "matrix.json").read_text())
    assert len(summary["missing"]) == len(CELLS)  # the tiny cells share names with the matrix's, not its caps
    assert "Not yet run:" in (out / "matrix.md").read_text()
