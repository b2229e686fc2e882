"""docs/results.md's centralised sections: paired intervals, white-box checks, tunings and the matrix, each
read from its JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedunlearn.simulations.results_bench import bench_sections


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _method(gap: float, probe: float, penultimate: tuple[float, float] = (0.6, 0.622)) -> dict[str, Any]:
    """A bench entry of two seeds; its penultimate probe per seed is ``penultimate`` (mean 0.611 by default)."""
    white_box = {"probe_stem_auc": probe, "probe_penultimate_auc": sum(penultimate) / 2, "gradient_norm_auc": 0.733,
                 "gradient_norm_tpr_at_1pct_fpr": 4.25, "relearn_epochs": [0, None]}
    per_seed = [{"seed": seed, "white_box": {"probe_stem": {"auc": probe, "members": 500, "nonmembers": 500},
                                             "probe_penultimate": {"auc": auc},
                                             "gradient_norm": {"auc": 0.733, "tpr_at_1pct_fpr": 4.25}}}
                for seed, auc in enumerate(penultimate)]
    return {"avg_gap": gap, "mia_auc": 0.5, "seconds": 2.0, "ta": 90.0, "white_box": white_box, "per_seed": per_seed}


def _bench() -> dict[str, Any]:
    interval = {"mean_difference": 0.4321, "ci_low": 0.1234, "ci_high": 0.7408, "n": 2, "excludes_zero": True}
    return {"dataset": "digits", "model": "cnn", "forget": "class:3", "seeds": [0, 1], "gold_standard": "retrain",
            "sizes": {"forget": 10, "train": 100}, "commit": "a" * 40,
            "methods": {"original": _method(9.0, 0.812), "retrain": _method(0.0, 0.497),
                        "remi": _method(1.0, 0.523, (0.7, 0.72)), "finetune": _method(1.5, 0.545)},
            "comparisons": {"finetune": {"avg_gap": interval, "ulira_accuracy": None}}}


def _tuning() -> dict[str, Any]:
    configuration = {"params": {"lr": "5e-3"}, "avg_gap": 1.2345}
    return {"setup": {"dataset": "fashion-mnist", "model": "cnn", "forget": "random:0.1"},
            "validation": {"seed": 10000}, "floor_avg_gap": 0.4567, "commit": "b" * 40,
            "methods": {"finetune": {"chosen": {"lr": "5e-3"}, "avg_gap": 1.2345,
                                     "configurations": [configuration] * 9}}}


def _matrix() -> dict[str, Any]:
    cell = {"train_size": None, "epochs": 40, "seeds": 1, "remi_avg_gap": 0.876, "floor_avg_gap": 0.3,
            "best_other": {"method": "finetune", "value": 1.234}, "remi_ulira": 0.5432,
            "best_other_ulira": {"method": "salun", "value": 0.6543}, "attack": "rmia",
            "tpr_at_1pct_fpr": {"remi": 2.0, "original": 7.5, "retrain": 1.0}, "remi_time_ratio": 0.0765,
            "commit": "c" * 40}
    return {"command": "python -m fedunlearn.simulations.bench_matrix", "cells": {"digits-cnn-random0.1": cell},
            "missing": ["digits-mlp-class3"]}


def test_paired_intervals_white_box_tunings_and_the_matrix_come_from_their_json(tmp_path: Path) -> None:
    _write(tmp_path / "bench" / "two-seeds" / "bench.json", _bench())
    _write(tmp_path / "bench" / "tuning-x" / "tuning.json", _tuning())
    _write(tmp_path / "bench" / "matrix" / "matrix.json", _matrix())
    page = "\n".join(bench_sections(tmp_path))
    assert "| finetune | +0.432 [+0.123, +0.741] * | - |" in page
    assert "| digits / cnn / `class:3` | 10 of 100 |" in page  # a CPU bench: no device named
    same = "+0.000 [+0.000, +0.000]"  # the original's probes equal retrain's on both seeds
    assert f"| original | 0.812 | 0.611 | 0.733 | 4.25 | {same} | {same} | 0, - |" in page
    # remi's probe reads 0.70 and 0.72 against retrain's 0.60 and 0.622: +0.1 and +0.098, an interval above 0
    assert "| remi | 0.523 | 0.710 | 0.733 | 4.25 | +0.099 [+0.086, +0.112] * | +0.000 [+0.000, +0.000] |" in page
    assert "| retrain | 0.497 | 0.611 | 0.733 | 4.25 | - | - | 0, - |" in page
    # the original's penultimate probe and gradient attack read no more than retrain's: they prove nothing here
    assert "on `probe_penultimate_auc`, `gradient_norm_auc`: those checks prove nothing here." in page
    assert "| finetune | lr=5e-3 | 1.23 | 9 |" in page and "differ by avg_gap 0.46" in page and "`bbbbbbbbbbbb`" in page
    assert "[digits-cnn-random0.1](bench/matrix/digits-cnn-random0.1/bench.md)" in page
    assert "| 0.88 | 1.23 (finetune) | 0.30 | 0.543 | 0.654 (salun) | 2.0 / 7.5 / 1.0 (rmia) | 0.076 |" in page
    assert "Not yet run: digits-mlp-class3." in page
    assert "by mean avg_gap on validation seed 10000 (" in page  # a tuning.json from before several seeds


def test_a_tuning_over_several_validation_seeds_names_them_all(tmp_path: Path) -> None:
    _write(tmp_path / "bench" / "two-seeds" / "bench.json", _bench())
    tuning = {**_tuning(), "validation": {"seeds": [10000, 10001, 10002]}}
    _write(tmp_path / "bench" / "tuning-x" / "tuning.json", tuning)
    assert "by mean avg_gap on validation seeds 10000, 10001, 10002 (" in "\n".join(bench_sections(tmp_path))


def test_a_deep_gap_tuning_says_what_it_chose_on_and_shows_the_figure(tmp_path: Path) -> None:
    _write(tmp_path / "bench" / "two-seeds" / "bench.json", _bench())
    tuning = _tuning()
    tuning["select"] = "deep_gap"
    tuning["methods"]["finetune"]["deep_gap"] = 1.789
    _write(tmp_path / "bench" / "tuning-x" / "tuning.json", tuning)
    page = "\n".join(bench_sections(tmp_path))
    assert "by mean deep_gap (the output figures and the white-box AUCs against retrain) on validation" in page
    assert "| method | chosen | validation avg_gap | validation deep_gap | configurations |" in page
    assert "| finetune | lr=5e-3 | 1.23 | 1.79 | 9 |" in page


def test_a_one_seed_bench_has_no_interval_section(tmp_path: Path) -> None:
    bench = {**_bench(), "seeds": [0]}
    for entry in bench["methods"].values():
        del entry["white_box"]
    _write(tmp_path / "bench" / "one-seed" / "bench.json", bench)
    page = "\n".join(bench_sections(tmp_path))
    assert "paired t interval" not in page and "White-box" not in page and "Equal tuning" not in page


def test_a_bench_row_names_a_gpu_and_uncommitted_changes(tmp_path: Path) -> None:
    _write(tmp_path / "bench" / "gpu" / "bench.json", {**_bench(), "device": "cuda", "worktree_dirty": True})
    row = next(line for line in bench_sections(tmp_path) if "10 of 100" in line)
    assert row.startswith("| digits / cnn / `class:3` on cuda | 10 of 100 |")
    assert row.endswith("| `aaaaaaaaaaaa` (uncommitted changes) |")


def test_a_bench_of_remi_and_retrain_alone_has_no_best_other(tmp_path: Path) -> None:
    bench = _bench()
    del bench["methods"]["finetune"], bench["comparisons"]
    _write(tmp_path / "bench" / "two" / "bench.json", bench)
    row = next(line for line in bench_sections(tmp_path) if "10 of 100" in line)
    assert "| 1.00 | - | 9.00 |" in row  # remi's avg_gap, no other method, the original's


def test_a_bench_row_says_why_remi_stopped_in_each_seed(tmp_path: Path) -> None:
    bench = _bench()
    for entry in bench["methods"].values():
        del entry["white_box"]  # these per-seed entries hold the stop reasons alone
    bench["methods"]["remi"]["per_seed"] = [{"stop_reason": "indistinguishable"}, {"stop_reason": "budget"},
                                            {"stop_reason": "indistinguishable"}]
    _write(tmp_path / "bench" / "three" / "bench.json", bench)
    row = next(line for line in bench_sections(tmp_path) if "10 of 100" in line)
    assert "| indistinguishable (2), budget (1) |" in row
    bench["methods"]["remi"]["per_seed"] = [{"stop_reason": "budget; best at step 280"}]
    _write(tmp_path / "bench" / "three" / "bench.json", bench)
    row = next(line for line in bench_sections(tmp_path) if "10 of 100" in line)
    assert "| budget; best at step 280 |" in row  # one seed: its reason alone
