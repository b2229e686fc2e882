"""The audit's benchmark drivers and their markdown: the seed sweep's summary, the power benchmark on a
tiny configuration, and the tables rendered from their JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedunlearn.simulations import audit_docs
from fedunlearn.simulations.audit_power import PowerConfig, run_power
from fedunlearn.simulations.seed_sweep import seed_summary


def _report(*, original_passed: bool, unlearned_passed: bool = True) -> dict[str, Any]:
    return {
        "seed": 3, "commit": "0123abcd", "references": {"models": 8, "training_seconds": 12.5},
        "unlearning": {"gate": {"passed": unlearned_passed, "attack": "rmia"}, "forget_auc": 0.52, "ta": 84.0,
                       "rounds": 1, "seconds": 10.0, "bytes": 1_000,
                       "round_seconds": [{"nodes": 6.5, "shaping": 1.25, "audit": 0.5, "ta": 1.75}]},
        "controls": {"original": {"passed": original_passed}, "federated_retrain": {"passed": True},
                     "evidence": "words"},
        "baselines": {"federated_retrain": {"forget_auc": 0.5, "ta": 84.5, "seconds": 200.0, "bytes": 40_000},
                      "original": {"forget_auc": 0.7},
                      "federaser": {"gate": {"passed": False}, "forget_auc": 0.61, "ta": 83.25, "ua": 97.5,
                                    "rounds": 4, "seconds": 50.0, "bytes": 20_000, "storage_bytes": 3_500_000},
                      "pga": None},
    }


def test_a_seed_summary_keeps_every_verdict_and_the_cost_ratios() -> None:
    row = seed_summary(_report(original_passed=False))
    assert (row["unlearned_passed"], row["original_passed"], row["retrain_passed"]) == (True, False, True)
    assert row["time_ratio"] == pytest.approx(0.05) and row["bytes_ratio"] == pytest.approx(0.025)
    assert row["forget_auc"] == {"unlearned": 0.52, "original": 0.7, "federated_retrain": 0.5}
    assert row["commit"] == "0123abcd"  # the run's own commit: a sweep may reuse runs made before it
    assert row["seconds"] == {"unlearning": 10.0, "federated_retrain": 200.0}
    assert row["round_seconds"] == [{"nodes": 6.5, "shaping": 1.25, "audit": 0.5, "ta": 1.75}]
    assert row["anchors"] == {"federaser": {"passed": False, "forget_auc": 0.61, "ta": 83.25, "ua": 97.5, "rounds": 4,
                                            "time_ratio": 0.25, "bytes_ratio": 0.5, "storage_bytes": 3_500_000}}
    empty = seed_summary({"seed": 0, "unlearning": None, "controls": None, "baselines": {}})
    assert empty["unlearned_passed"] is None and empty["time_ratio"] is None and empty["anchors"] == {}


def test_the_sweep_table_is_rendered_from_its_json(tmp_path: Path) -> None:
    rows = [seed_summary(_report(original_passed=False)), seed_summary(_report(original_passed=True))]
    sweep = {"scenario": "memorise", "commit": "abcdef1234567890",
             "command": "python -m fedunlearn.simulations.seed_sweep x",
             "note": "Seeds 1 and 2 were reused from an earlier run.",
             "seeds": rows, "counts": {"original_failed": 1, "retrain_passed": 2, "unlearned_passed": 2, "of": 2}}
    folder = tmp_path / "federation" / "memorise"
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text(json.dumps(sweep))
    audit_docs.main(tmp_path)
    text = (folder / "sweep.md").read_text()
    assert "failed the do-nothing original in 1 of 2 seeds" in text and "abcdef123456" in text
    assert "| 3 | pass | FAIL | pass | rmia | 0.520 / 0.700 / 0.500 |" in text
    assert "Seeds 1 and 2 were reused from an earlier run." in text
    assert text.count("| 0123abcd |") == 2  # each seed names the commit its run was made at
    assert "| 3 | federaser | FAIL | 0.610 | 83.25 | 97.50 | 4 | 0.250 | 0.500 | 3.5 |" in text
    assert text.count("| 3 | 1 | 6.50 | 1.25 | 0.50 | 1.75 | 10.00 | 200.0 |") == 2  # where each round's time went


def test_the_power_benchmark_runs_and_renders(tmp_path: Path) -> None:
    config = PowerConfig(dataset="digits", model="mlp", pool=200, outsiders=150, public=400, references=4,
                         epochs=3, sizes=(10, 40), draws=3, nonmembers=60)
    result = {"commit": "0" * 40, "command": "test", **run_power(config)}
    assert set(result["power"]) == {"10", "40"}
    for rates in result["power"].values():
        assert set(rates) == {"original", "never_trained"}
        assert all(0.0 <= r <= 1.0 for group in rates.values() for r in group.values())
    assert set(result["design"]["offline_public"]) == {"lira", "rmia", "loss"}
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "power.json").write_text(json.dumps(result))
    audit_docs.main(tmp_path)
    assert "| 40 |" in (tmp_path / "audit" / "power.md").read_text()
