"""docs/results.md: assembled from the result JSON alone, and never out of date with the repository's JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedunlearn.common.errors import DataError
from fedunlearn.simulations import results_docs, results_summary
from fedunlearn.simulations.results_render import result_pages

REPO = Path(__file__).resolve().parents[2]


def _write(root: Path, relative: str, data: dict[str, Any]) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _seed(seed: int, passed: bool, time_ratio: float, bytes_ratio: float) -> dict[str, Any]:
    return {"seed": seed, "unlearned_passed": passed, "original_passed": False, "retrain_passed": True,
            "time_ratio": time_ratio, "bytes_ratio": bytes_ratio}


def _edge_model(agreement: float, ratio: float) -> dict[str, Any]:
    return {"fp32_max_abs_diff": 2.5e-6, "int8_top1_agreement": agreement, "int8_ta_drop": 0.37,
            "mia_auc_int8_gap": 0.0042, "fp32_bytes": 2048.0, "int8_bytes": 1024.0, "mia_auc_torch": 0.611,
            "mia_auc_fp32": 0.612, "mia_auc_int8": 0.616, "int8_vs_fp32_b1": ratio}


def _method(gap: float, auc: float, seconds: float, ta: float) -> dict[str, Any]:
    return {"avg_gap": gap, "mia_auc": auc, "seconds": seconds, "ta": ta}


def _strong_methods(rows: tuple[tuple[str, float, float, float], ...]) -> dict[str, Any]:
    """(name, avg_gap, lira TPR, U-LiRA accuracy) -> bench.json methods with reference-model attacks."""
    return {name: {**_method(gap, 0.5, 1.0, 98.0),
                   "attacks": {"lira": {"tpr_at_1pct_fpr": lira}, "rmia": {"tpr_at_1pct_fpr": 2 * lira},
                               "loss": {"tpr_at_1pct_fpr": 0.9}, "entropy": {"tpr_at_1pct_fpr": 0.8}},
                   "ulira": {"accuracy": ulira, "accuracy_std": 0.012, "shadows": 16}}
            for name, gap, lira, ulira in rows}


def _report() -> dict[str, Any]:
    artifacts = [{"model": "unlearned", "precision": "fp32", "bytes": 4096, "gate_passed": True},
                 {"model": "unlearned", "precision": "int8-static", "bytes": 2048, "gate_passed": True}]
    return {
        "controls": {"original": {"passed": False}, "federated_retrain": {"passed": True}},
        "scenario": "tiny-run", "clients": 7, "dataset": "digits", "model": "mlp", "commit": "feedface" * 5,
        "unlearning": {"gate": {"passed": True, "worst_attack": "lira", "tolerance": 0.087}, "forget_auc": 0.521,
                       "ta": 91.25},
        "baselines": {"original": {"forget_auc": 0.733, "ta": 93.5}, "federated_retrain": {"forget_auc": 0.498,
                                                                                         "ta": 92.75}},
        "export": {"model": "unlearned", "parity_max_abs_diff": 3.5e-5, "int8_top1_agreement": 0.9871,
                   "fp32_ta": 90.0, "int8_ta": 89.25, "artifacts": artifacts,
                   "leakage": {"original": {"torch": 0.733, "fp32": 0.733, "int8": 0.741},
                               "federated_retrain": {"torch": 0.498, "fp32": 0.498, "int8": 0.495},
                               "unlearned": {"torch": 0.521, "fp32": 0.521, "int8": 0.524}}},
    }


def _fixtures(root: Path) -> None:
    _write(root, "federation/memo/sweep.json", {
        "scenario": "memo", "commit": "abcdef1234567890", "dirty": True, "command": "sweep",
        "counts": {"of": 3, "original_failed": 3, "retrain_passed": 2, "unlearned_passed": 1},
        "seeds": [_seed(0, True, 0.123, 0.045), _seed(1, False, 0.456, 0.067), _seed(2, False, 0.789, 0.089)]})
    _write(root, "audit/power.json", {
        "commit": "0badc0de" * 5, "config": {"dataset": "digits", "model": "mlp", "draws": 11, "nonmembers": 77,
                                             "looks": 4},
        "power": {"25": {"original": {"loss": 0.31, "reference": 0.64},
                         "never_trained": {"loss": 0.02, "reference": 0.03}}}})
    _write(root, "federation/tiny-run/report.json", _report())
    (root / "federation/tiny-run/report.md").write_text("the run's own page")  # linked: it exists
    _write(root, "federation/scaling/scaling.json", {"scenario": "tiny.toml", "points": [
        {"clients": 12, "rounds": 2, "wall_seconds": 45.6, "peak_rss_mb": 789.0, "training_seconds": 12.3,
         "unlearning_seconds": 4.5, "status": "completed"}]})
    _write(root, "edge/e1/edge.json", {
        "dataset": "digits", "model": "cnn", "seeds": [0, 1],
        "targets": {"int8_top1_agreement": {"op": ">=", "value": 0.99},
                    "int8_vs_fp32_b1": {"op": "<=", "value": 0.6}},
        "models": {"original": _edge_model(0.9912, 1.1), "retrain": _edge_model(0.9934, 1.1),
                   "remi": _edge_model(0.9956, 1.1)}})
    _write(root, "edge/e1/seed-0-remi/bench-edge-quiet.json", {
        "repeats": 200, "warmup": 5, "cpu": {"model": "Test CPU", "logical_cores": 2},
        "engines": {e: {"b1": {"median_ms": m}, "b32": {"median_ms": 10 * m}}
                    for e, m in (("torch", 0.432), ("ort_fp32", 0.123), ("ort_int8", 0.061))},
        "ratios": {"ort_fp32_vs_torch_b1": 0.286, "int8_vs_fp32_b1": 0.496}})
    _write(root, "bench/b1/bench.json", {
        "dataset": "digits", "model": "cnn", "forget": "class:3", "seeds": [0, 1, 2], "gold_standard": "retrain",
        "sizes": {"forget": 110, "train": 1079},
        "methods": {"original": _method(49.83, 0.58, 2.0, 98.0), "retrain": _method(0.0, 0.44, 2.0, 98.5),
                    "remi": {**_method(0.37, 0.40, 0.5, 98.25), "stop_reason": "budget; best at step 380"},
                    "finetune": _method(0.61, 0.47, 0.3, 98.8), "fisher": _method(40.39, 0.55, 0.4, 82.0),
                    "remi-no-kl": {**_method(0.2, 0.5, 0.4, 98.0), "variant_of": "remi"}}})
    strong = _strong_methods((("original", 2.0, 3.25, 0.612), ("retrain", 0.0, 1.0, 0.503),
                              ("remi", 1.0, 1.5, 0.541), ("finetune", 1.2, 1.75, 0.588)))
    _write(root, "bench/b2/bench.json", {
        "dataset": "digits", "model": "cnn", "forget": "random:0.1", "seeds": [0, 1], "gold_standard": "retrain",
        "sizes": {"forget": 108, "train": 1079}, "references": {"models": 8}, "methods": strong,
        "comparisons": {"finetune": {"avg_gap": {"mean_difference": 0.2, "ci_low": -0.1, "ci_high": 0.5, "n": 2,
                                                 "excludes_zero": False}}},
        "floor": {"method": "retrain", "avg_gap": {"mean": 0.4}}})
    _write(root, "cli/startup.json", {
        "commit": "1234567890ab" * 3, "runs": 5, "cpus": 2, "load_average": 1.25,
        "goal": {"seconds": 0.5, "peak_rss_mib": 100.0},
        "commands": {"fedunlearn --help": {"median_seconds": 0.417, "median_peak_rss_mib": 26.0, "loads": "typer"}}})
    _write(root, "security/load.json", {
        "commit": "c0ffee00" * 5, "passed": True, "parameters": {"train_samples": 4321}, "machine": {"cpus": 2},
        "checks": {"ledger": {"acknowledged": 99, "present": 99, "duplicates": 0}},
        "phases": [{"phase": "idle", "callers": 1, "training": None, "acknowledged": 99, "attempts": 100,
                    "acknowledged_per_s": 12.3, "latency_ms": {"submit": {"p50_ms": 3.21, "p99_ms": 65.4}}}]})


@pytest.fixture
def page(tmp_path: Path) -> str:
    _fixtures(tmp_path)
    assert results_docs.main(["--docs", str(tmp_path)]) == 0
    return (tmp_path / results_docs.PAGE).read_text()


def test_the_sweep_and_gate_power_figures_land_in_the_page(page: str) -> None:
    assert "| memo | 3 | 3/3 | 2/3 | 1/3 | 0.12 - 0.79 | 0.04 - 0.09 |" in page  # no sweep.md: no dead link
    assert "`abcdef123456` (uncommitted changes)" in page
    assert "| 25 | 0.31 | 0.64 | 0.02 | 0.03 |" in page and "11 draws" in page and "`0badc0de0bad`" in page


def test_a_run_report_gives_its_row_export_and_leakage(page: str) -> None:
    assert "| [tiny-run](federation/tiny-run/report.md) | 7 | mlp / digits | pass | lira | 0.087 |" in page
    assert "0.521 / 0.733 / 0.498 | no | 91.25 / 92.75 | original FAIL, retrain pass | `feedfacefeed` |" in page
    assert "| mlp / digits (tiny-run export, clients' audit) | 3.5e-05 | 98.71% | 0.75 | 4 / 2 |" in page
    assert "0.733 / 0.733 / 0.741 | 0.498 / 0.498 / 0.495 | 0.521 / 0.521 / 0.524 | 0.008 |" in page
    assert "| 12 | 2 | 45.6 | 789 | 12.3 | 4.5 | completed |" in page


def test_edge_figures_and_targets_come_from_edge_json(page: str) -> None:
    assert "| cnn / digits (bench, 2 seeds) | 2.5e-06 | 99.12 - 99.56% | 0.37 | 2 / 1 |" in page
    assert "0.611 / 0.612 / 0.616" in page and "not recorded" in page
    assert "| cnn / digits (bench export seed-0-remi) | 0.432 | 0.123 | 0.061 | 4.320 | 1.230 | 0.610 | 0.29 | 0.50 |" \
        in page
    assert "Median ms over 200 calls after 5 warm-up" in page and "Test CPU" in page
    # the worst agreement over every source, a run's export included, misses the JSON's own target
    assert "| `int8_top1_agreement` >= 0.99 | 0.987 | mlp / digits (tiny-run export, clients' audit) | **no** |" in page
    assert "| `int8_vs_fp32_b1` <= 0.6 | 0.496 | cnn / digits (bench export seed-0-remi) | yes |" in page


def test_bench_startup_and_load_figures_land_in_the_page(page: str) -> None:
    assert ("| digits / cnn / `class:3` | 110 of 1079 | 3 | 0.37 | finetune 0.61 | 49.83 | "
            "0.040 | 0.250 | +0.25 | budget; best at step 380 | not recorded |") in page
    assert "| fisher | 40.39 | - |" in page and "| method | b1 | b2 |" in page  # columns named by folder
    assert "| remi-no-kl | 0.20 | - |" in page  # an ablation variant gets its row, but is never the best other method
    # per-example attacks and U-LiRA, only for the bench that ran them, only the strong attacks and loss
    assert "U-LiRA on digits `random:0.1` (2 seeds, 8 reference models, U-LiRA over 16 shadow splits" in page
    assert "| original | 3.25 | 6.50 | 0.90 | 0.612 | 0.012 |" in page
    assert "| remi | 1.50 | 3.00 | 0.90 | 0.541 |" in page
    assert "entropy TPR" not in page and "U-LiRA on digits `class:3`" not in page
    assert "| `fedunlearn --help` | 0.42 | 26 | typer |" in page and "load average 1.25" in page
    assert "| idle | 1 | no | 3.2 | 65.4 | 99 of 100 | 12.3 |" in page and "4321 training samples" in page


def test_check_reports_a_stale_page(tmp_path: Path, page: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert results_docs.main(["--docs", str(tmp_path), "--check"]) == 0
    (tmp_path / results_docs.PAGE).write_text(page.replace("3/3", "2/3"))
    assert results_docs.main(["--docs", str(tmp_path), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err


def test_docs_results_md_matches_the_repository_json() -> None:
    expected = results_docs.render(REPO / "docs")
    assert (REPO / "docs" / results_docs.PAGE).read_text() == expected, (
        "docs/results.md is out of date with the JSON under docs/: run `python -m fedunlearn.simulations.results_docs`")


def test_the_repository_readme_quotes_only_what_its_json_says() -> None:
    readme = (REPO / "README.md").read_text()
    assert results_summary.readme_with_summary(readme, REPO / "docs") == readme, (
        "README.md's results block is out of date with the JSON under docs/: run "
        "`python -m fedunlearn.simulations.results_docs`")


def test_the_readme_block_is_rewritten_from_the_json_and_the_rest_is_kept(tmp_path: Path) -> None:
    docs, readme = tmp_path / "docs", tmp_path / "README.md"
    _fixtures(docs)
    readme.write_text(f"# x\n\nintro\n\n{results_summary.BEGIN}\n- stale 9/9\n{results_summary.END}\n\nafter\n")
    assert results_docs.main(["--docs", str(docs), "--check"]) == 1
    assert results_docs.main(["--docs", str(docs)]) == 0
    text = " ".join(readme.read_text().split())
    assert text.startswith("# x intro <!-- results") and text.endswith("<!-- /results --> after") and "9/9" not in text
    assert ("`memo`: over 3 seeds the gate failed the do-nothing original 3/3, passed federated retrain 2/3 and "
            "passed the unlearned model 1/3; the unlearning phase took 0.12-0.79 of federated retrain's time and "
            "0.04-0.09 of its bytes") in text
    assert "cost or less): not met, 0 of 3 seeds passed at a tenth or less, 0 at a twentieth or less." in text
    # its original fails the gate and retrain passes: not among the runs that claim nothing
    assert ("Single runs where the gate failed the do-nothing original and passed federated retrain: `tiny-run` "
            "(the unlearned model passed).") in text
    assert ("at 1% FPR rmia flags 6.5% of the original's forget set (the loss attack 0.9%), 2.0% of retrain's and "
            "3.0% of ReMI's. avg_gap: ReMI 1.00, finetune 1.20 (paired difference +0.20, 95% CI [-0.10, +0.50]: the "
            "seeds show no difference); two retrainings differ by 0.40. U-LiRA accuracy (0.5: its outputs cannot be "
            "told from retraining's): ReMI 0.541, the "
            "best other inexact method (finetune) 0.588, the original 0.612, two retrainings 0.503.") in text
    assert "`class:3`" not in text  # that bench ran no reference-model attack: nothing to say
    assert "4,321 samples" in text and "99 of 99 acknowledged requests" in text
    assert "idle (1 caller) 3.2/65.4 ms" in text
    assert results_docs.main(["--docs", str(docs), "--check"]) == 0


def test_a_sweep_that_meets_its_goal_says_so_and_a_readme_without_markers_is_refused(tmp_path: Path) -> None:
    """The goal counts the seeds whose unlearned model passed at a tenth of retrain's time and bytes or less: a
    dear pass or a failed one does not count, and four such seeds of five meet it. The benchmark's twentieth is
    counted beside it the same way."""
    cheap = [_seed(s, True, 0.05, 0.04) for s in range(3)]  # at a twentieth, the bound included
    for name, last_two in (("memo", [_seed(3, True, 0.07, 0.02), _seed(4, True, 0.124, 0.03)]),
                           ("dear", [_seed(3, True, 0.101, 0.02), _seed(4, True, 0.2, 0.03)]),
                           ("leaky", [_seed(3, False, 0.05, 0.02), _seed(4, True, 0.05, 0.11)])):
        _write(tmp_path, f"federation/{name}/sweep.json", {
            "scenario": name, "counts": {"of": 5, "original_failed": 5, "retrain_passed": 5, "unlearned_passed": 5},
            "seeds": cheap + last_two})
    _write(tmp_path, "federation/quiet/report.json", {**_report(), "controls": {"original": {"passed": True}}})
    _write(tmp_path, "federation/unaudited/report.json", {**_report(), "unlearning": {"gate": None}})
    summary = "\n".join(results_summary.summary(tmp_path))
    assert "`memo`" in summary and "met, 4 of 5 seeds passed at a tenth or less, 3 at a twentieth or less." in summary
    # dear and leaky
    assert summary.count("not met, 3 of 5 seeds passed at a tenth or less, 3 at a twentieth or less.") == 2
    assert "original passes the same gate, so they claim nothing about forgetting: `quiet`." in summary
    assert "could audit its forget set, so its requests stay pending: `unaudited`." in summary
    with pytest.raises(DataError, match="results markers"):
        results_summary.readme_with_summary("# a README\n", tmp_path)


def test_a_bench_of_remi_and_its_variants_alone_names_no_other_method(tmp_path: Path) -> None:
    """Its U-LiRA sentence names the variants' figures beside ReMI's, and no "best other inexact method"."""
    methods = _strong_methods((("original", 2.0, 3.25, 0.612), ("retrain", 0.0, 1.0, 0.503),
                               ("remi", 1.0, 1.5, 0.541), ("remi-lr", 0.9, 1.4, 0.531)))
    methods["remi-lr"]["variant_of"] = "remi"
    _write(tmp_path, "bench/only-remi/bench.json", {
        "dataset": "fashion-mnist", "model": "cnn", "forget": "random:0.1", "seeds": [0, 1],
        "gold_standard": "retrain", "sizes": {"forget": 100, "train": 1000}, "methods": methods,
        "config": {"tuned": "docs/bench/tuning-x/tuning.json"}})
    summary = "\n".join(results_summary.summary(tmp_path))
    assert "1,000 training images, 2 seeds, methods as tuned in `tuning-x` ([bench](" in summary
    assert ("U-LiRA accuracy (0.5: its outputs cannot be told from retraining's): ReMI 0.541 (its variants: remi-lr "
            "0.531), the original 0.612, two retrainings 0.503.") in summary
    assert "best other" not in summary


def test_every_bench_tuning_and_matrix_page_matches_the_repository_json() -> None:
    stale = [str(page.relative_to(REPO)) for page, text in result_pages(REPO / "docs").items()
             if page.read_text() != text]
    assert not stale, f"out of date with their JSON: {stale}: run `python -m fedunlearn.simulations.results_docs`"
