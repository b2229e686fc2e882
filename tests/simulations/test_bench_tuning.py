"""Equal tuning (``bench --tune``): the grids, the validation seed's run and choice, and ``bench --tuned``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fedunlearn.common.data.datasets import load_dataset
from fedunlearn.common.errors import ConfigError
from fedunlearn.common.training import TrainConfig
from fedunlearn.common.unlearning import parse_params
from fedunlearn.simulations.bench import GOLD, BenchConfig
from fedunlearn.simulations.bench_tuning import (
    GRIDS,
    MAX_CONFIGS,
    VALIDATION_SEED,
    Tuning,
    configurations,
    run_tuning,
    tuned_params,
    validation_bundle,
    write_tuning,
)
from fedunlearn.simulations.bench_whitebox import deep_gap
from fedunlearn.simulations.cli import app

CONFIG = BenchConfig(dataset="digits", model="mlp", forget="random:0.1", methods=(GOLD, "finetune", "neggrad_plus"),
                     train_size=400, recipe=TrainConfig(epochs=3), device="cpu", reference_models=2,
                     method_params={"finetune": {"early_stop": "true"}})
SMALL_GRIDS = {"finetune": {"epochs": ("1", "3"), "lr": ("1e-3", "5e-2")}, "neggrad_plus": {"alpha": ("0.5", "0.95")}}


@pytest.mark.parametrize("method", sorted(GRIDS))
def test_every_grid_fits_the_budget_and_holds_the_defaults(method: str) -> None:
    grid = configurations(GRIDS[method])
    assert 1 < len(grid) <= MAX_CONFIGS
    assert parse_params(method, {}) in [parse_params(method, params) for params in grid]


def test_every_inexact_method_the_bench_runs_by_default_has_a_grid() -> None:
    assert set(BenchConfig().methods) - {GOLD} <= set(GRIDS)


def test_configurations_are_the_grids_product_in_order() -> None:
    assert configurations({"a": ("1", "2"), "b": ("x",)}) == [{"a": "1", "b": "x"}, {"a": "2", "b": "x"}]


@pytest.fixture(scope="module")
def tuning(tmp_path_factory: pytest.TempPathFactory) -> tuple[Tuning, dict[str, Any], Path]:
    progress: list[str] = []
    tuning = run_tuning(CONFIG, progress.append, grids=SMALL_GRIDS, validation_seeds=2)
    out = tmp_path_factory.mktemp("tuning")
    payload = write_tuning(tuning, out, command="fedunlearn bench --tune --test", provenance=("abc", False))
    return tuning, payload, out


def test_each_validation_seed_runs_every_configuration_against_its_own_retrain(
        tuning: tuple[Tuning, dict[str, Any], Path]) -> None:
    runs, payload = tuning[0].runs, tuning[1]
    assert [run.seed for run in runs] == [VALIDATION_SEED, VALIDATION_SEED + 1]
    assert payload["validation"]["seeds"] == [VALIDATION_SEED, VALIDATION_SEED + 1]
    assert runs[0].data.forget.ids.tolist() != runs[1].data.forget.ids.tolist(), "the seeds share a forget set"
    for run in runs:
        assert set(run.runs) == {"original", GOLD, "finetune-0", "finetune-1", "finetune-2", "finetune-3",
                                 "neggrad_plus-0", "neggrad_plus-1"}
        assert run.runs["finetune-2"].result is not None and run.runs["finetune-2"].result.params["epochs"] == 3
    rows = payload["methods"]["finetune"]["configurations"]
    # the --param held fixed is in every configuration, and so in the choice that --tuned carries on
    grid = configurations(SMALL_GRIDS["finetune"])
    assert [row["params"] for row in rows] == [{"early_stop": "true", **c} for c in grid]
    assert payload["methods"]["finetune"]["chosen"]["early_stop"] == "true"
    for i, row in enumerate(rows):
        gaps = [round(run.gap(f"finetune-{i}"), 4) for run in runs]
        assert row["avg_gap_per_seed"] == gaps
        assert row["avg_gap"] == round(sum(gaps) / 2, 4)
    floors = [round(run.floor_gap, 4) for run in runs]
    assert payload["floor_avg_gap_per_seed"] == floors and payload["floor_avg_gap"] == round(sum(floors) / 2, 4)


def test_the_lowest_mean_avg_gap_is_chosen(tuning: tuple[Tuning, dict[str, Any], Path]) -> None:
    for method, entry in tuning[1]["methods"].items():
        best = min(entry["configurations"], key=lambda row: row["avg_gap"])
        assert entry["chosen"] == best["params"] and entry["avg_gap"] == best["avg_gap"], method


def test_the_reported_test_split_plays_no_part_in_the_choice(tuning: tuple[Tuning, dict[str, Any], Path]) -> None:
    bundle = load_dataset("digits")
    for run in tuning[0].runs:
        data = run.data
        validation_test = set(data.bundle.test.ids.tolist())
        assert len(validation_test) == tuning[1]["validation"]["sizes"]["test"] == len(bundle.train) // 5
        assert validation_test <= set(bundle.train.ids.tolist()), "the validation test set is not from the pool"
        seen = {*data.retain.ids.tolist(), *data.forget.ids.tolist(), *data.holdout.ids.tolist()}
        assert not validation_test & seen, "the validation test set overlaps the seed's split"
        assert validation_bundle(bundle).test.ids.tolist() == data.bundle.test.ids.tolist()  # the same carve


def test_tuning_json_names_its_setup_commit_and_files(tuning: tuple[Tuning, dict[str, Any], Path]) -> None:
    _, payload, out = tuning
    assert json.loads((out / "tuning.json").read_text()) == payload
    assert payload["commit"] == "abc" and payload["command"] == "fedunlearn bench --tune --test"
    assert payload["setup"]["train_size"] == 400 and payload["setup"]["recipe"]["epochs"] == 3
    originals = [run.runs["original"].report for run in tuning[0].runs]
    assert payload["controls"]["original"]["ua"] == round(sum(float(r.ua) for r in originals) / 2, 4)
    assert set(payload["controls"]) == {"original", GOLD}
    markdown = (out / "tuning.md").read_text()
    assert "## finetune" in markdown and markdown.count("| chosen |") == 2
    assert f"validation seeds {VALIDATION_SEED}, {VALIDATION_SEED + 1}" in markdown


def test_tuned_params_reads_the_choices_and_keeps_other_params(tuning: tuple[Tuning, dict[str, Any], Path]) -> None:
    _, payload, out = tuning
    config = replace(CONFIG, method_params={"finetune": {"batch_size": "32"}})  # the bench's own --param
    params = tuned_params(out / "tuning.json", config)
    assert params["finetune"] == {**payload["methods"]["finetune"]["chosen"], "batch_size": "32"}
    assert params["neggrad_plus"] == payload["methods"]["neggrad_plus"]["chosen"]


@pytest.mark.parametrize(("change", "message"), [
    ({"train_size": 500}, r"another setup \(train_size differ\)"),
    ({"recipe": TrainConfig(epochs=4)}, r"another setup \(recipe differ\)"),
    ({"methods": (GOLD, "salun")}, "no tuning for salun"),
    ({"method_params": {"finetune": {"lr": "1"}}}, "finetune.lr overrides a tuned value"),
])
def test_tuned_params_refuses_what_it_was_not_tuned_for(tuning: tuple[Tuning, dict[str, Any], Path],
                                                        change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tuned_params(tuning[2] / "tuning.json", replace(CONFIG, **change))


def test_tuned_params_refuses_a_file_that_is_not_a_tuning(tmp_path: Path) -> None:
    path = tmp_path / "tuning.json"
    path.write_text('{"methods": []}')
    with pytest.raises(ConfigError, match=r"not a tuning\.json"):
        tuned_params(path, CONFIG)


@pytest.mark.parametrize(("config", "message"), [
    (replace(CONFIG, methods=(GOLD, "remi", "nope")), "nope"),
    (replace(CONFIG, method_params={"finetune": {"lr": "1e-3"}}), "finetune.lr is tuned"),
])
def test_run_tuning_refuses_before_training(config: BenchConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run_tuning(config, grids=SMALL_GRIDS)


def test_a_grid_over_the_budget_is_refused() -> None:
    grid = {"finetune": {"epochs": tuple(str(e) for e in range(1, MAX_CONFIGS + 2))}}
    with pytest.raises(ConfigError, match="more than the 12"):
        run_tuning(replace(CONFIG, methods=(GOLD, "finetune")), grids=grid)


def test_bench_tuned_runs_the_choices_and_records_the_file(tuning: tuple[Tuning, dict[str, Any], Path],
                                                          tmp_path: Path) -> None:
    payload, path = tuning[1], tuning[2] / "tuning.json"
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, [
        "bench", "--dataset", "digits", "--model", "mlp", "--forget", "random:0.1",
        "--methods", "retrain,finetune,neggrad_plus", "--train-size", "400", "--epochs", "3",
        "--reference-models", "2", "--device", "cpu", "--tuned", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "bench.json").read_text())
    assert saved["config"]["tuned"] == str(path)
    for method in ("finetune", "neggrad_plus"):
        chosen = parse_params(method, payload["methods"][method]["chosen"])
        assert saved["methods"][method]["params"] == {k: v for k, v in vars(chosen).items()}, method
    assert "equal tuning chose" in (out / "bench.md").read_text()


def test_bench_tune_refuses_options_that_belong_to_the_bench(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "--tune", "--ulira-shadows", "16", "--out", str(tmp_path)])
    assert isinstance(result.exception, ConfigError) and "--tune runs the methods alone" in str(result.exception)


def test_run_tuning_refuses_no_validation_seed() -> None:
    with pytest.raises(ConfigError, match="at least one validation seed"):
        run_tuning(CONFIG, grids=SMALL_GRIDS, validation_seeds=0)


def test_bench_tune_passes_its_seeds_on_as_validation_seeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []

    def stop_after_recording(config: BenchConfig, progress: Any, *, validation_seeds: int, select: str) -> Tuning:
        asked.append((validation_seeds, select))
        raise ConfigError("recorded")

    monkeypatch.setattr("fedunlearn.simulations.bench_tuning.run_tuning", stop_after_recording)
    result = CliRunner().invoke(app, ["bench", "--tune", "--seeds", "3", "--out", str(tmp_path)])
    assert isinstance(result.exception, ConfigError) and asked == [(3, "avg_gap")]
    result = CliRunner().invoke(app, ["bench", "--tune", "--tune-select", "deep_gap", "--out", str(tmp_path)])
    assert isinstance(result.exception, ConfigError) and asked[-1] == (1, "deep_gap")


def test_tune_select_without_tune_or_of_an_unknown_figure_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "--tune-select", "deep_gap", "--out", str(tmp_path)])
    assert isinstance(result.exception, ConfigError) and "without --tune" in str(result.exception)
    with pytest.raises(ConfigError, match="selects on one of avg_gap, deep_gap, not 'ua'"):
        run_tuning(CONFIG, grids=SMALL_GRIDS, select="ua")


def test_a_deep_gap_tuning_probes_every_model_and_chooses_on_the_insides_too(tmp_path: Path) -> None:
    config = replace(CONFIG, methods=(GOLD, "finetune"))
    tuning = run_tuning(config, grids={"finetune": SMALL_GRIDS["finetune"]}, select="deep_gap")
    payload = write_tuning(tuning, tmp_path, command="fedunlearn bench --tune --tune-select deep_gap",
                           provenance=("abc", False))
    (run,) = tuning.runs
    assert all(model.white_box is not None for model in run.runs.values())
    entry = payload["methods"]["finetune"]
    for i, row in enumerate(entry["configurations"]):
        name = f"finetune-{i}"
        expected = deep_gap(run.gap(name), run.runs[name].white_box, run.runs[GOLD].white_box)
        assert row["deep_gap_per_seed"] == [round(expected, 4)] and row["deep_gap"] == round(expected, 4)
        assert row["white_box"]["gradient_norm_auc"] == round(run.runs[name].white_box["gradient_norm"]["auc"], 4)
    best = min(entry["configurations"], key=lambda row: row["deep_gap"])
    assert entry["chosen"] == best["params"] and entry["deep_gap"] == best["deep_gap"]
    assert payload["select"] == "deep_gap" and "deep_gap" in payload["selection"]
    assert "probe_penultimate_auc" in payload["controls"]["original"]["white_box"]
    markdown = (tmp_path / "tuning.md").read_text()
    assert "| configuration | avg_gap | per seed | deep_gap | deep per seed | stem probe |" in markdown
    assert "white-box AUCs stem / penultimate / gradient-norm" in markdown


def test_deep_gap_averages_the_output_gap_with_the_white_box_distances_in_points() -> None:
    def checks(stem: float, penultimate: float, gradient: float) -> dict[str, Any]:
        return {"probe_stem": {"auc": stem}, "probe_penultimate": {"auc": penultimate},
                "gradient_norm": {"auc": gradient, "tpr_at_1pct_fpr": 1.0}}

    model, retrain = checks(0.50, 0.60, 0.55), checks(0.52, 0.54, 0.50)
    # four output figures at mean 1.0, then 2, 6 and 5 points: (4 + 13) / 7
    assert deep_gap(1.0, model, retrain) == pytest.approx(17 / 7)
    assert deep_gap(1.0, retrain, retrain) == pytest.approx(4 / 7)
