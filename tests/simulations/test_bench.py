"""The centralised benchmark: a tiny two-seed run on digits, a tiny U-LiRA run, and validation that fails
before training.

The checks on the two-seed class-forgetting run (``bench_dir``) are marked slow: the bench end to end, three
methods on two seeds. The smaller runs below (references, U-LiRA) and test_cli.py's bench commands keep
run_bench in the fast set."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fedunlearn.common.audit.attacks import ATTACKS
from fedunlearn.common.audit.calibrated import CALIBRATED_ATTACKS, Calibration
from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import ConfigError, UnknownNameError
from fedunlearn.common.models import Classifier, ModelSpec, build_model
from fedunlearn.common.training import TrainConfig
from fedunlearn.common.unlearning import METHODS, UnlearningResult, UnlearningTask, run_method
from fedunlearn.common.unlearning.remi import RemiParams
from fedunlearn.simulations import bench, bench_ulira, results_docs
from fedunlearn.simulations.bench import GOLD, BenchConfig, SeedRun, Stream, Variant, derived_seed, run_bench
from fedunlearn.simulations.bench_expectation import SampleStatistics, expected_confidence
from fedunlearn.simulations.bench_report import ATTACK_FIELDS, METRICS, strongest_reference_attack, write_report
from fedunlearn.simulations.bench_ulira import SeedULira, run_ulira, shadow_forget_size, shadow_splits
from fedunlearn.simulations.bench_whitebox import (
    CAP,
    RELEARN_EPOCHS,
    UNMEASURED,
    WhiteBoxSets,
    powerless,
    white_box,
)

CONFIG = BenchConfig(
    dataset="digits",
    model="mlp",
    forget="class:3",
    methods=("retrain", "remi", "finetune"),
    recipe=TrainConfig(epochs=3),
    seeds=2,
    device="cpu",
    reference_models=2,
)
DESIGN_METRICS = ("ua", "ra", "ta", "mia_efficacy", "mia_auc", "tpr_at_1pct_fpr", "tpr_at_01pct_fpr",
                  "seconds", "avg_gap")
ALL_ATTACKS = (*ATTACKS.names(), *CALIBRATED_ATTACKS.names())


@dataclass(frozen=True)
class Trained:
    """One call of a training helper: what it trained on, with which seed."""

    ids: frozenset[int]
    seed: int


def _spy(monkeypatch: pytest.MonkeyPatch, module: object, calls: list[Trained]) -> None:
    """Record every ``train_model`` call that ``module`` makes, then train as usual."""
    real = bench.train_model

    def spy(spec: ModelSpec, data: LabeledData, recipe: TrainConfig, device: torch.device,
            seed: int) -> tuple[Classifier, float]:
        calls.append(Trained(frozenset(data.ids.tolist()), seed))
        return real(spec, data, recipe, device, seed)

    monkeypatch.setattr(module, "train_model", spy)


Tasks = list[tuple[str, UnlearningTask]]


def _spy_tasks(monkeypatch: pytest.MonkeyPatch, module: object, tasks: Tasks) -> None:
    """Record the task of every method ``module`` runs, then run it as usual."""

    def spy(name: str, task: UnlearningTask, params: Any | None = None) -> UnlearningResult:
        tasks.append((name, task))
        return run_method(name, task, params)

    monkeypatch.setattr(module, "run_method", spy)


BenchDir = tuple[Path, dict[str, Any], list[str], Tasks]


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> BenchDir:
    out = tmp_path_factory.mktemp("bench")
    progress: list[str] = []
    tasks: Tasks = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        _spy_tasks(monkeypatch, bench, tasks)
        runs = run_bench(CONFIG, progress.append)
    payload = write_report(CONFIG, "cpu", runs, out, command="fedunlearn bench --test")
    return out, payload, progress, tasks


@pytest.fixture(scope="module")
def saved(bench_dir: BenchDir) -> dict[str, Any]:
    return json.loads((bench_dir[0] / "bench.json").read_text())


@pytest.mark.slow
def test_bench_json_describes_the_run(saved: dict[str, Any]) -> None:
    assert saved["dataset"] == "digits"
    assert saved["model"] == "mlp"
    assert saved["forget"] == "class:3"
    assert saved["seeds"] == [0, 1]
    assert saved["device"] == "cpu"
    assert set(saved["methods"]) == {"original", "retrain", "remi", "finetune"}


@pytest.mark.slow
def test_written_json_is_what_write_report_returned(
    bench_dir: BenchDir, saved: dict[str, Any]
) -> None:
    assert json.loads(json.dumps(bench_dir[1])) == saved


@pytest.mark.slow
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


@pytest.mark.slow
def test_retrain_is_the_gold_standard(saved: dict[str, Any]) -> None:
    retrain = saved["methods"]["retrain"]
    assert retrain["avg_gap"] == 0.0
    assert retrain["avg_gap_std"] == 0.0
    # a model never trained on class 3 does not predict it
    assert retrain["ua"] >= 95.0
    assert saved["methods"]["original"]["avg_gap"] > 0.0


@pytest.mark.slow
def test_methods_record_how_they_ran_and_the_original_does_not(saved: dict[str, Any]) -> None:
    assert "steps" not in saved["methods"]["original"]
    assert all("stop_reason" not in seed for seed in saved["methods"]["original"]["per_seed"])
    for method in ("retrain", "remi", "finetune"):
        entry = saved["methods"][method]
        for seed in entry["per_seed"]:
            assert isinstance(seed["stop_reason"], str)
            assert isinstance(seed["steps"], int)
        assert entry["steps"] == pytest.approx(sum(seed["steps"] for seed in entry["per_seed"]) / CONFIG.seeds)
        assert isinstance(entry["params"], dict)
    assert set(saved["methods"]["remi"]["params"]) == {f.name for f in fields(RemiParams)}


@pytest.mark.slow
def test_every_attack_has_its_three_figures_per_seed_and_on_average(saved: dict[str, Any]) -> None:
    for method, entry in saved["methods"].items():
        assert list(entry["attacks"]) == list(ALL_ATTACKS), method
        for name, figures in entry["attacks"].items():
            for field in ATTACK_FIELDS:
                per_seed = [seed["attacks"][name][field] for seed in entry["per_seed"]]
                assert figures[field] == pytest.approx(sum(per_seed) / len(per_seed), abs=1e-4), (method, name)
                assert figures[f"{field}_std"] >= 0
            assert 0.0 <= figures["auc"] <= 1.0
            assert 0.0 <= figures["tpr_at_01pct_fpr"] <= figures["tpr_at_1pct_fpr"] <= 100.0
        # the headline metrics are the loss attack's
        assert entry["mia_auc"] == entry["attacks"]["loss"]["auc"]
        assert entry["tpr_at_1pct_fpr"] == entry["attacks"]["loss"]["tpr_at_1pct_fpr"]


@pytest.mark.slow
def test_per_seed_entries_hold_every_aggregated_metric(saved: dict[str, Any]) -> None:
    for method, entry in saved["methods"].items():
        assert [seed["seed"] for seed in entry["per_seed"]] == saved["seeds"]
        for metric in METRICS:
            values = [seed[metric] for seed in entry["per_seed"]]
            assert entry[metric] == pytest.approx(sum(values) / len(values), abs=1e-4), (method, metric)
        assert "ulira" not in entry  # off unless asked for


@pytest.mark.slow
def test_the_json_names_its_commit_command_and_references(saved: dict[str, Any]) -> None:
    assert saved["command"] == "fedunlearn bench --test"
    assert len(saved["commit"]) == 40 or saved["commit"] == "unknown"
    assert isinstance(saved["worktree_dirty"], bool)
    references = saved["references"]
    assert references["models"] == CONFIG.reference_models
    assert [seed["seed"] for seed in references["per_seed"]] == saved["seeds"]
    for seed in references["per_seed"]:
        assert seed["train_size"] == saved["sizes"]["retain"] // 2
        assert seed["seconds"] > 0
    assert saved["ulira"] is None


@pytest.mark.slow
def test_report_files_exist(bench_dir: BenchDir) -> None:
    out = bench_dir[0]
    for png in ("roc.png", "metrics.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    table = (out / "bench.md").read_text()
    for method in ("original", "retrain", "remi", "finetune"):
        # the metrics table, the per-example one and the white-box one; the paired differences to remi add all
        # but remi and retrain, the white-box differences to retrain all but retrain
        assert table.count(f"| {method} |") == {"retrain": 3, "remi": 4}.get(method, 5), method
    for metric in DESIGN_METRICS:
        assert metric in table
    assert "strongest TPR@1%" in table and "loss TPR@1%" in table and "U-LiRA" not in table
    assert "`fedunlearn bench --test`" in table
    config = json.loads((out / "config.json").read_text())
    assert config["methods"] == ["retrain", "remi", "finetune"]
    assert config["forget"] == "class:3"


@pytest.mark.slow
def test_bench_json_keeps_the_first_seeds_roc_curve_of_every_method(saved: dict[str, Any]) -> None:
    roc = saved["roc"]
    assert roc["seed"] == saved["seeds"][0] and roc["attack"] == "loss"
    assert set(roc["curves"]) == set(saved["methods"])
    for method, curve in roc["curves"].items():
        assert len(curve["tpr"]) == len(roc["fpr"]), method
        assert all(0 <= a <= b <= 1 for a, b in zip(curve["tpr"], curve["tpr"][1:], strict=False)), method
        assert curve["tpr"][-1] == 1 and curve["auc"] == saved["methods"][method]["per_seed"][0]["mia_auc"]


@pytest.mark.slow
def test_results_docs_draws_the_page_and_plots_again_from_bench_json_alone(bench_dir: BenchDir,
                                                                           tmp_path: Path) -> None:
    folder = tmp_path / "bench" / "tiny"
    folder.mkdir(parents=True)
    (folder / "bench.json").write_text((bench_dir[0] / "bench.json").read_text())
    assert results_docs.main(["--docs", str(tmp_path), "--check"]) == 1  # bench.md is missing
    assert results_docs.main(["--docs", str(tmp_path)]) == 0
    assert (folder / "bench.md").read_text() == (bench_dir[0] / "bench.md").read_text()
    for png in ("roc.png", "metrics.png"):
        assert (folder / png).read_bytes() == (bench_dir[0] / png).read_bytes(), png
    assert results_docs.main(["--docs", str(tmp_path), "--check"]) == 0


@pytest.mark.slow
def test_a_bench_json_that_predates_its_commit_is_left_as_written(saved: dict[str, Any], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "bench" / "old"
    folder.mkdir(parents=True)
    old = {key: value for key, value in saved.items() if key not in ("commit", "worktree_dirty", "roc")}
    (folder / "bench.json").write_text(json.dumps(old))
    (folder / "bench.md").write_text("as its run wrote it\n")
    assert results_docs.main(["--docs", str(tmp_path)]) == 0
    assert (folder / "bench.md").read_text() == "as its run wrote it\n"
    assert f"left as written: {folder / 'bench.json'}" in capsys.readouterr().out


@pytest.mark.slow
def test_progress_reports_each_seed_and_method(bench_dir: BenchDir) -> None:
    progress = bench_dir[2]
    # + the original, the references and the floor's second retrain
    assert len(progress) == CONFIG.seeds * (len(CONFIG.all_methods) + 3)
    for seed in range(CONFIG.seeds):
        for method in CONFIG.all_methods:
            assert any(f"seed {seed}" in line and method in line for line in progress)


# --- reference models: once per seed, never on a forget sample ------------------------------------


RANDOM = replace(CONFIG, forget="random:0.1", methods=("retrain", "remi"), reference_models=3,
                 method_params={"remi": {"max_steps": "20"}},
                 variants=(Variant("remi-no-kl", "remi", {"lambda_kl": "0"}),))


@dataclass(frozen=True)
class RandomRun:
    """A sample-forgetting bench with what it trained (original, then K references per seed) and every
    method's task."""

    runs: list[SeedRun]
    calls: list[Trained]
    tasks: Tasks

    def references(self, seed: int) -> list[Trained]:
        per_seed = 1 + RANDOM.reference_models
        return self.calls[seed * per_seed + 1:(seed + 1) * per_seed]


@pytest.fixture(scope="module")
def random_run() -> RandomRun:
    calls: list[Trained] = []
    tasks: Tasks = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        _spy(monkeypatch, bench, calls)
        _spy_tasks(monkeypatch, bench, tasks)
        runs = run_bench(RANDOM)
    return RandomRun(runs, calls, tasks)


def test_references_train_once_per_seed_on_halves_of_the_retain_set(random_run: RandomRun) -> None:
    config, runs, calls = RANDOM, random_run.runs, random_run.calls
    # per seed: the original, then the K references; no method's audit trains any more of them
    assert len(calls) == config.seeds * (1 + config.reference_models)
    for i, run in enumerate(runs):
        original, *references = calls[i * (1 + config.reference_models):(i + 1) * (1 + config.reference_models)]
        retain, forget = set(run.data.retain.ids.tolist()), set(run.data.forget.ids.tolist())
        assert forget <= original.ids
        for reference in references:
            assert reference.ids <= retain and not reference.ids & forget
            assert len(reference.ids) == len(retain) // 2 == run.references.train_size
        assert len({reference.ids for reference in references}) == config.reference_models  # each its own half
        assert len({original.seed, *(reference.seed for reference in references)}) == 1 + config.reference_models
        assert run.references.count == config.reference_models
        for method_run in run.runs.values():
            assert [a.name for a in method_run.report.attacks] == list(ALL_ATTACKS)


# --- what the references expect of each sample: only those that never trained on it --------------


def test_expectation_is_the_mean_over_the_references_that_left_a_sample_out() -> None:
    statistic = np.array([[1.0, 2.0, 3.0, 4.0],
                          [5.0, 6.0, 7.0, 8.0],
                          [9.0, 10.0, 11.0, 12.0]])
    inside = np.array([[True, False, True, False],
                       [False, False, True, True],
                       [False, False, True, True]])
    statistics = SampleStatistics(np.array([40, 41, 42, 43]), Calibration(statistic, inside))
    # 40: reference 0 trained on it; 41: none did (a forget or hold-out sample); 42: all did; 43: only 0 left it out
    assert expected_confidence(statistics) == {40: 7.0, 41: 6.0, 43: 4.0}
    assert statistics.trained_on(1) == {42, 43}
    with pytest.raises(ValueError, match="repeat"):
        SampleStatistics(np.array([1, 1, 2, 3]), Calibration(statistic, inside))


def test_bench_expectation_uses_only_references_whose_half_excluded_the_sample(random_run: RandomRun) -> None:
    for run in random_run.runs:
        samples, expected, data = run.references.samples, run.data.expected, run.data
        assert expected is not None
        references = random_run.references(run.seed)
        assert [samples.trained_on(k) for k in range(len(references))] == [r.ids for r in references]
        column = {int(i): c for c, i in enumerate(samples.ids.tolist())}
        statistic = samples.calibration.statistic
        for i in data.retain.ids.tolist():
            out = [k for k, reference in enumerate(references) if i not in reference.ids]
            if out:
                assert expected[i] == pytest.approx(statistic[out, column[i]].mean())
            else:
                assert i not in expected
        # about half the references left each retain sample out: most have an expectation, from fewer than K
        assert 0 < sum(i in expected for i in data.retain.ids.tolist()) < len(data.retain)
        # forget and hold-out samples: every reference is OUT, and the forget columns are the audit's own
        for i, value in zip(data.forget.ids.tolist(), run.references.statistics.forget.statistic.mean(axis=0),
                            strict=True):
            assert expected[i] == pytest.approx(value)
        for i in data.holdout.ids.tolist():
            assert expected[i] == pytest.approx(statistic[:, column[i]].mean())


def test_every_method_of_a_sample_request_gets_the_expectation(random_run: RandomRun) -> None:
    # per seed: every method, the variant (as its method) and the floor's second retrain
    per_seed = [*RANDOM.all_methods, "remi", "retrain"]
    assert [name for name, _ in random_run.tasks] == per_seed * RANDOM.seeds
    for i, (name, task) in enumerate(random_run.tasks):
        run = random_run.runs[i // len(per_seed)]
        expected = task.expected_confidence
        assert expected is not None and expected is run.data.expected, name
        assert set(task.forget.ids.tolist()) | set(task.reference.ids.tolist()) <= set(expected)


@pytest.mark.slow
def test_a_class_request_gets_no_expectation(bench_dir: BenchDir, saved: dict[str, Any]) -> None:
    tasks = bench_dir[3]
    assert "remi" in [name for name, _ in tasks]
    assert all(task.expected_confidence is None for _, task in tasks)
    assert saved["references"]["expected_confidence"] is False
    assert all(seed["expected_samples"] == 0 for seed in saved["references"]["per_seed"])
    assert "ReMI measured raw membership" in (bench_dir[0] / "bench.md").read_text()


def test_the_expectation_is_recorded_and_remi_calibrated_turns_it_off(random_run: RandomRun,
                                                                      tmp_path: Path) -> None:
    payload = write_report(RANDOM, "cpu", random_run.runs, tmp_path)
    assert payload["references"]["expected_confidence"] is True
    for seed, run in zip(payload["references"]["per_seed"], random_run.runs, strict=True):
        assert seed["expected_samples"] == len(run.data.expected or {}) > 0
    assert payload["methods"]["remi"]["params"]["calibrated"] is True
    assert "ReMI measured membership as the excess" in (tmp_path / "bench.md").read_text()
    _, params = replace(RANDOM, method_params={"remi": {"calibrated": "false"}}).validate()
    assert params["remi"].calibrated is False


def test_the_report_names_the_commit_the_run_started_at(random_run: RandomRun, tmp_path: Path) -> None:
    """A long run's checkout can move on before it writes; bench.json must name the code that ran."""
    payload = write_report(RANDOM, "cpu", random_run.runs, tmp_path, provenance=("f" * 40, True))
    assert (payload["commit"], payload["worktree_dirty"]) == ("f" * 40, True)
    assert f"commit `{'f' * 40}` (with uncommitted changes)" in (tmp_path / "bench.md").read_text()


# --- the floor: a second retrain per seed; variants: a method again, with fixed hyper-parameters -----


@pytest.fixture
def random_report(random_run: RandomRun, tmp_path: Path) -> tuple[dict[str, Any], str]:
    payload = write_report(RANDOM, "cpu", random_run.runs, tmp_path)
    return json.loads(json.dumps(payload)), (tmp_path / "bench.md").read_text()


def _tasks_of(random_run: RandomRun, seed: int) -> Tasks:
    per_seed = len(random_run.tasks) // RANDOM.seeds
    return random_run.tasks[seed * per_seed:(seed + 1) * per_seed]


def test_the_floor_is_retrain_again_under_a_seed_of_its_own_stream(random_run: RandomRun) -> None:
    for run in random_run.runs:
        (retrain, gold), *_, (floor_method, floor) = _tasks_of(random_run, run.seed)
        assert retrain == floor_method == GOLD
        assert floor.seed == derived_seed(run.seed, Stream.FLOOR_RETRAIN, 0) != gold.seed == run.seed
        assert floor.retain is gold.retain and floor.recipe == gold.recipe
        assert run.floor.result is not None and run.floor.result.method == GOLD
        first, second = (m.model.state_dict() for m in (run.runs[GOLD], run.floor))
        assert any(not torch.equal(first[k], second[k]) for k in first)  # another draw, not a copy
        assert run.floor_gap == pytest.approx(bench.avg_gap(run.floor.report, run.runs[GOLD].report))


def test_the_floor_is_reported_apart_from_every_method(random_run: RandomRun,
                                                       random_report: tuple[dict[str, Any], str]) -> None:
    payload, table = random_report
    floor = payload["floor"]
    gaps = [run.floor_gap for run in random_run.runs]
    assert floor["avg_gap"]["per_seed"] == [round(gap, 4) for gap in gaps]
    assert floor["avg_gap"]["mean"] == pytest.approx(np.mean(gaps), abs=1e-4)
    assert floor["avg_gap"]["std"] == pytest.approx(np.std(gaps), abs=1e-4)
    assert floor["seconds"]["per_seed"] == [round(run.floor.seconds, 4) for run in random_run.runs]
    retrain_seconds = [seed["seconds"] for seed in payload["methods"][GOLD]["per_seed"]]
    assert retrain_seconds == [round(run.runs[GOLD].seconds, 4) for run in random_run.runs]
    assert f"is {floor['avg_gap']['mean']:.2f} ± {floor['avg_gap']['std']:.2f}" in table
    assert "Below this, no difference means anything" in table


def test_a_variant_runs_its_method_on_the_same_task_with_only_its_keys_changed(random_run: RandomRun) -> None:
    for run in random_run.runs:
        tasks = [task for name, task in _tasks_of(random_run, run.seed) if name == "remi"]
        assert len(tasks) == 2 and tasks[0] is tasks[1]  # remi and its variant: one task, one original
        remi, variant = run.runs["remi"].result, run.runs["remi-no-kl"].result
        assert remi is not None and variant is not None
        assert variant.params == {**remi.params, "lambda_kl": 0.0}
        assert variant.params["max_steps"] == 20  # remi's --param carries over


def test_variants_are_reported_like_methods_and_paired_with_remi(random_report: tuple[dict[str, Any], str]) -> None:
    payload, table = random_report
    entry = payload["methods"]["remi-no-kl"]
    assert entry["variant_of"] == "remi" and entry["overrides"] == {"lambda_kl": 0.0}
    assert "variant_of" not in payload["methods"]["remi"]
    assert set(payload["comparisons"]) == {"original", "remi-no-kl"}
    # the white-box checks ran, so the variant is paired with remi inside the model too
    assert set(payload["comparisons"]["remi-no-kl"]) == {"avg_gap", "probe_penultimate_auc", "gradient_norm_auc"}
    paired = payload["comparisons"]["remi-no-kl"]["avg_gap"]
    remi = payload["methods"]["remi"]["per_seed"]
    differences = [v["avg_gap"] - r["avg_gap"] for v, r in zip(entry["per_seed"], remi, strict=True)]
    assert paired["n"] == RANDOM.seeds
    assert paired["mean_difference"] == pytest.approx(np.mean(differences), abs=1e-4)
    assert paired["ci_low"] <= paired["mean_difference"] <= paired["ci_high"]
    # metrics, paired differences to remi, per-example attacks, white-box figures and their differences to retrain
    assert table.count("| remi-no-kl |") == 5
    assert "`remi-no-kl` is remi with lambda_kl=0.0" in table
    assert payload["config"]["variants"] == [{"name": "remi-no-kl", "method": "remi", "params": {"lambda_kl": "0"}}]


@pytest.mark.parametrize(("text", "expected"), [
    ("remi-no-mi=remi:lambda_mia=0", Variant("remi-no-mi", "remi", {"lambda_mia": "0"})),
    ("remi-all=remi:scope=all, lambda_kl=0.5", Variant("remi-all", "remi", {"scope": "all", "lambda_kl": "0.5"})),
    ("remi-again=remi", Variant("remi-again", "remi", {})),
])
def test_variant_option_is_parsed(text: str, expected: Variant) -> None:
    assert Variant.parse(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("remi", "NAME=METHOD:KEY=VALUE"),
    ("remi:lambda_mia=0", "NAME=METHOD:KEY=VALUE"),
    ("=remi:lambda_mia=0", "NAME=METHOD:KEY=VALUE"),
    ("x=", "NAME=METHOD:KEY=VALUE"),
    ("x=remi:lambda_mia", "NAME=METHOD:KEY=VALUE"),
    ("x=remi:lambda_mia=", "NAME=METHOD:KEY=VALUE"),
    ("x=remi:lambda_mia=0,lambda_mia=1", "lambda_mia is given twice"),
])
def test_malformed_variant_option_says_the_form(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Variant.parse(text)


def test_strongest_reference_attack_is_the_higher_mean() -> None:
    entry = {"attacks": {"lira": {"tpr_at_1pct_fpr": 3.0}, "rmia": {"tpr_at_1pct_fpr": 4.5}}}
    assert strongest_reference_attack(entry) == "rmia"
    entry["attacks"]["lira"]["tpr_at_1pct_fpr"] = 5.0
    assert strongest_reference_attack(entry) == "lira"


# --- U-LiRA ------------------------------------------------------------------------------------------

ULIRA = replace(CONFIG, forget="random:0.1", methods=("retrain", "finetune"), seeds=1, ulira_shadows=4,
                variants=(Variant("finetune-1", "finetune", {"epochs": "1"}),))


@dataclass(frozen=True)
class ULiraRun:
    out: Path
    saved: dict[str, Any]
    run: SeedRun
    ulira: SeedULira
    shadow_calls: list[Trained]
    progress: list[str]
    shadow_tasks: Tasks


@pytest.fixture(scope="module")
def ulira_run(tmp_path_factory: pytest.TempPathFactory) -> ULiraRun:
    out = tmp_path_factory.mktemp("ulira")
    _, params = ULIRA.validate()
    progress: list[str] = []
    calls: list[Trained] = []
    tasks: Tasks = []
    (run,) = run_bench(ULIRA)
    with pytest.MonkeyPatch.context() as monkeypatch:
        _spy(monkeypatch, bench_ulira, calls)
        _spy_tasks(monkeypatch, bench_ulira, tasks)
        ulira = run_ulira(ULIRA, run, params, progress.append)
    write_report(ULIRA, "cpu", [run], out, ulira=[ulira])
    return ULiraRun(out, json.loads((out / "bench.json").read_text()), run, ulira, calls, progress, tasks)


def test_ulira_is_reported_for_every_method_and_the_original(ulira_run: ULiraRun) -> None:
    saved = ulira_run.saved
    assert saved["ulira"]["shadows"] == ULIRA.ulira_shadows
    (seed,) = saved["ulira"]["per_seed"]
    data = ulira_run.run.data
    assert seed["forget_size"] == shadow_forget_size(0.1, len(data.retain) + len(data.forget))
    assert seed["targets"] == 2 * seed["forget_size"]
    for method in ("original", *ULIRA.lineup):
        entry = saved["methods"][method]
        assert entry["ulira"]["shadows"] == ULIRA.ulira_shadows
        assert 0.0 <= entry["ulira"]["accuracy"] <= 1.0
        assert entry["ulira"]["accuracy_std"] == 0.0  # one seed
        (per_seed,) = entry["per_seed"]
        assert per_seed["ulira"]["accuracy"] == entry["ulira"]["accuracy"]
        # 4 paired shadows: every target is forgotten in exactly 2, so each shadow's m targets are scored
        assert per_seed["ulira"]["cases"] == ULIRA.ulira_shadows * seed["forget_size"]
    assert ulira_run.progress == [f"seed 0: U-LiRA shadow {s}/4" for s in range(1, 5)]
    table = (ulira_run.out / "bench.md").read_text()
    assert "U-LiRA accuracy" in table
    assert "| retrain | " in table
    assert saved["methods"]["finetune-1"]["variant_of"] == "finetune"  # shadows run variants too
    assert saved["comparisons"] is None and "paired CI" not in table  # no remi, nothing to pair with


def test_each_shadow_forgets_its_targets_and_retrains_under_another_seed(ulira_run: ULiraRun) -> None:
    """Per shadow: an original on its half of the pool, then the yardstick retrained on that half minus its
    m targets, with a seed that is not the one the retrain method gets (the shadow's own)."""
    run, calls = ulira_run.run, ulira_run.shadow_calls
    pool = set(run.data.retain.ids.tolist()) | set(run.data.forget.ids.tolist())
    m = ulira_run.ulira.forget_size
    assert len(calls) == 2 * ULIRA.ulira_shadows
    targets: set[int] = set()
    for s in range(ULIRA.ulira_shadows):
        original, yardstick = calls[2 * s], calls[2 * s + 1]
        assert original.ids <= pool and yardstick.ids < original.ids
        assert len(original.ids - yardstick.ids) == m
        targets |= original.ids - yardstick.ids
        assert original.seed == derived_seed(run.seed, Stream.SHADOW, s)
        assert yardstick.seed == derived_seed(run.seed, Stream.SHADOW_RETRAIN, s) != original.seed
    assert len(targets) == ulira_run.ulira.targets == 2 * m
    # complementary pairs: shadows 0 and 1 split the pool between them
    assert calls[0].ids | calls[2].ids == pool and not calls[0].ids & calls[2].ids


def test_shadow_tasks_carry_the_expectation_of_references_that_never_saw_a_target(ulira_run: ULiraRun) -> None:
    run, tasks = ulira_run.run, ulira_run.shadow_tasks
    assert len(tasks) == ULIRA.ulira_shadows * len(ULIRA.lineup)
    samples = run.references.samples
    trained = [samples.trained_on(k) for k in range(ULIRA.reference_models)]
    for _, task in tasks:
        expected = task.expected_confidence
        assert expected is not None and expected is run.data.expected
        for i in task.forget.ids.tolist():  # a target lacks one only where every reference trained on it
            assert (i in expected) == (not all(i in ids for ids in trained))


@pytest.mark.parametrize("shadows", [4, 5, 16])
def test_shadow_splits_hold_m_targets_each_and_pair_up(shadows: int) -> None:
    pool, m = 101, 7
    splits = shadow_splits(pool, m, shadows, torch.Generator().manual_seed(0))
    assert splits.targets.shape == (2 * m,) and len(set(splits.targets.tolist())) == 2 * m
    forgotten = splits.forgotten
    assert forgotten.shape == (shadows, 2 * m)
    assert (forgotten.sum(axis=1) == m).all()
    sizes = splits.train.sum(dim=1).tolist()
    assert set(sizes) <= {pool // 2, pool - pool // 2}
    for first in range(0, shadows - 1, 2):
        assert torch.equal(splits.train[first], ~splits.train[first + 1])
    paired = shadows - shadows % 2
    assert (forgotten[:paired].sum(axis=0) == paired // 2).all()  # every target in half the paired shadows


def test_shadow_forget_size_is_the_bench_fraction_of_half_the_pool() -> None:
    assert shadow_forget_size(0.1, 1079) == 54
    with pytest.raises(ConfigError, match=r"random:0\.001"):
        shadow_forget_size(0.001, 100)


def test_retrain_is_always_run() -> None:
    assert BenchConfig(methods=("finetune",)).all_methods == ("retrain", "finetune")
    assert BenchConfig(methods=("finetune", "retrain")).all_methods == ("finetune", "retrain")


# --- validation happens before any training -------------------------------------------------------


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started before the configuration was validated")

    monkeypatch.setattr(bench, "train", refuse)
    monkeypatch.setattr("fedunlearn.common.training.train", refuse)


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
        ({"reference_models": 1}, ["--reference-models", ">= 2"]),
        ({"forget": "random:0.1", "ulira_shadows": 2}, ["--ulira-shadows", ">= 4", "16"]),
        ({"ulira_shadows": 8}, ["--ulira-shadows", "random:", "class:3"]),
        ({"variants": (Variant("finetune", "remi"),)}, ["'finetune'", "taken"]),
        ({"variants": (Variant("original", "remi"),)}, ["'original'", "taken"]),
        ({"variants": (Variant("a", "remi"), Variant("a", "finetune"))}, ["'a'", "twice"]),
        ({"variants": (Variant("a|b", "remi"),)}, ["'a|b'", "letters, digits"]),
        ({"variants": (Variant("x", "nope"),)}, ["nope", *METHODS.names()]),
        ({"variants": (Variant("x", "remi", {"lambda_mi": "0"}),)}, ["--variant x", "remi.lambda_mi", "lambda_mia"]),
        ({"variants": (Variant("x", "remi", {"scope": "some"}),)}, ["--variant x", "remi.scope", "top"]),
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



# --- white-box checks: every model of a seed probed on the same samples --------------------------------


@pytest.mark.slow  # the only fast reader of the class bench (bench_dir, about 11 s): it runs with the others
def test_every_model_of_a_class_request_gets_probes_gradients_and_relearning(saved: dict[str, Any]) -> None:
    for method, entry in saved["methods"].items():
        for seed in entry["per_seed"]:
            checks = seed["white_box"]
            assert set(checks) == {"probe_stem", "probe_penultimate", "gradient_norm", "relearn"}, method
            assert 0 <= checks["probe_stem"]["auc"] <= 1 and checks["probe_stem"]["layer"] == "stem"
            assert checks["probe_stem"]["members"] == checks["probe_stem"]["nonmembers"] > 0
            assert len(checks["relearn"]["curve"]) == RELEARN_EPOCHS + 1
        means = entry["white_box"]
        assert means["gradient_norm_auc"] == pytest.approx(
            np.mean([s["white_box"]["gradient_norm"]["auc"] for s in entry["per_seed"]]), abs=1e-4)
        assert means["relearn_epochs"] == [s["white_box"]["relearn"]["epochs"] for s in entry["per_seed"]]
    # the original knew the class: it is at its own target before any fine-tuning
    assert saved["methods"]["original"]["white_box"]["relearn_epochs"] == [0, 0]
    # every model of a seed is held to the same target (a share of the original's class accuracy)
    targets = {s["white_box"]["relearn"]["threshold"] for e in saved["methods"].values() for s in e["per_seed"]
               if s["seed"] == 0}
    assert len(targets) == 1


def test_a_sample_request_gets_no_relearning_and_the_page_shows_the_checks(
        random_report: tuple[dict[str, Any], str]) -> None:
    payload, markdown = random_report
    for entry in payload["methods"].values():
        assert "relearn" not in entry["per_seed"][0]["white_box"] and "relearn_epochs" not in entry["white_box"]
    assert "## White-box checks" in markdown and "relearn epochs" not in markdown
    # every model but retrain paired with retrain on each check, in the JSON and on the page
    paired = payload["white_box_comparisons"]
    assert set(paired) == set(payload["methods"]) - {"retrain"}
    remi = paired["remi"]["gradient_norm_auc"]
    differences = [s["white_box"]["gradient_norm"]["auc"] - r["white_box"]["gradient_norm"]["auc"]
                   for s, r in zip(payload["methods"]["remi"]["per_seed"], payload["methods"]["retrain"]["per_seed"],
                                   strict=True)]
    assert remi["mean_difference"] == pytest.approx(np.mean(differences), abs=1e-4)
    stem = paired["remi"]["probe_stem_auc"]["mean_difference"]
    assert "penultimate probe − retrain" in markdown and f"| remi | {stem:+.3f} |" in markdown


def test_the_white_box_samples_are_capped_draws_of_forget_and_same_class_test_samples() -> None:
    generator = torch.Generator().manual_seed(0)
    forget = LabeledData(torch.randn(600, 1, 4, 4), torch.randint(0, 2, (600,), generator=generator),
                         torch.arange(600))
    test = LabeledData(torch.randn(900, 1, 4, 4), torch.randint(0, 3, (900,), generator=generator),
                       torch.arange(1000, 1900))
    sets = WhiteBoxSets.draw(forget=forget, retain=test, test=test, forgotten_classes=(), seed=3)
    assert len(sets.members) == CAP and set(sets.members.ids.tolist()) <= set(forget.ids.tolist())
    assert len(sets.nonmembers) == CAP and set(sets.nonmembers.y.tolist()) <= {0, 1}  # class 2 is not in forget
    assert sets.relearn is None
    again = WhiteBoxSets.draw(forget=forget, retain=test, test=test, forgotten_classes=(), seed=3)
    assert again.members.ids.tolist() == sets.members.ids.tolist()  # every model of a seed: the same samples


def test_no_white_box_leaves_the_checks_out(tmp_path: Path) -> None:
    config = replace(RANDOM, seeds=1, white_box=False, variants=())
    runs = run_bench(config)
    assert all(run.white_box is None for run in runs[0].runs.values())
    payload = write_report(config, "cpu", runs, tmp_path)
    assert "white_box" not in payload["methods"]["remi"]
    assert payload["white_box_comparisons"] is None
    assert "White-box" not in (tmp_path / "bench.md").read_text()


def test_relearning_is_not_measured_where_the_original_never_knew_the_class() -> None:
    generator = torch.Generator().manual_seed(0)
    data = LabeledData(torch.randn(40, 1, 8, 8, generator=generator), torch.ones(40, dtype=torch.long),
                       torch.arange(40))
    model = build_model(ModelSpec("mlp", 1, 8, 3), seed=0)
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([1e4, 0.0, 0.0]))  # it answers class 0, whatever it sees
    sets = WhiteBoxSets.draw(forget=data, retain=data, test=data, forgotten_classes=(1,), seed=0)
    target = sets.relearn_target(model, torch.device("cpu"))
    assert target is None
    figures = white_box(model, sets, target=target, device=torch.device("cpu"), seed=0)
    assert figures["relearn"] == UNMEASURED and figures["relearn"]["epochs"] is None


def test_a_white_box_check_that_does_not_separate_the_original_from_retrain_is_flagged() -> None:
    retrain = {"probe_stem_auc": 0.48, "probe_penultimate_auc": 0.49, "gradient_norm_auc": 0.50}
    original = {"probe_stem_auc": 0.62, "probe_penultimate_auc": 0.50, "gradient_norm_auc": 0.53}
    # with 500 against 500 two standard errors of a no-signal AUC are 0.037
    assert powerless(original, retrain, 500, 500) == ["probe_penultimate_auc", "gradient_norm_auc"]
    assert powerless(original, retrain, 5000, 5000) == ["probe_penultimate_auc"]
