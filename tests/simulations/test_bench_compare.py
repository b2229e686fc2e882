"""Paired differences to ReMI (and white-box ones to retrain): known t intervals on fixed per-seed figures, and no
interval from one seed."""

from __future__ import annotations

from typing import Any

import pytest

from fedunlearn.simulations.bench_compare import (
    comparison_markdown,
    comparisons,
    paired_interval,
    white_box_comparison_markdown,
    white_box_comparisons,
)

# t quantiles from a printed table (two-sided 95%), not from scipy, so that the test checks the call
T_975_DF2 = 4.302653
T_975_DF4 = 2.776445


def test_three_seeds_give_the_hand_computed_interval() -> None:
    # differences 1.0, 1.5, 2.5: mean 5/3, sample variance (16 + 1 + 25) / 36 / 2 = 7/12, se = sqrt(7/12 / 3)
    interval = paired_interval([2.0, 3.0, 4.5], [1.0, 1.5, 2.0])
    half = T_975_DF2 * (7 / 36) ** 0.5
    assert interval.n == 3
    assert interval.mean == pytest.approx(5 / 3)
    assert interval.low == pytest.approx(5 / 3 - half, abs=1e-5)  # -0.2306
    assert interval.high == pytest.approx(5 / 3 + half, abs=1e-5)  # 3.5640
    assert interval.excludes_zero is False


def test_five_seeds_whose_interval_excludes_zero() -> None:
    # differences .05 .06 .03 .04 .05: mean .046, sample variance .00052 / 4, se = sqrt(.00013 / 5)
    interval = paired_interval([0.60, 0.62, 0.58, 0.61, 0.59], [0.55, 0.56, 0.55, 0.57, 0.54])
    half = T_975_DF4 * (0.00013 / 5) ** 0.5
    assert (interval.low, interval.high) == pytest.approx((0.046 - half, 0.046 + half), abs=1e-6)
    assert interval.low == pytest.approx(0.03184, abs=1e-5)
    assert interval.excludes_zero is True
    flipped = paired_interval([0.55, 0.56, 0.55, 0.57, 0.54], [0.60, 0.62, 0.58, 0.61, 0.59])
    assert (flipped.low, flipped.high) == pytest.approx((-interval.high, -interval.low))
    assert flipped.excludes_zero is True


def test_one_seed_has_a_difference_and_no_interval() -> None:
    interval = paired_interval([2.0], [0.5])
    assert interval.mean == 1.5 and interval.n == 1
    assert interval.low is None and interval.high is None and interval.excludes_zero is None
    assert interval.to_dict() == {"mean_difference": 1.5, "ci_low": None, "ci_high": None, "n": 1,
                                  "excludes_zero": None}


def test_unpaired_figures_are_refused() -> None:
    with pytest.raises(ValueError, match="same non-zero number"):
        paired_interval([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="same non-zero number"):
        paired_interval([], [])


def _entry(gaps: list[float], ulira: list[float] | None = None, seeds: list[int] | None = None) -> dict[str, Any]:
    per_seed: list[dict[str, Any]] = [{"seed": s, "avg_gap": g} for s, g in zip(seeds or range(len(gaps)), gaps,
                                                                                strict=True)]
    for seed, accuracy in zip(per_seed, ulira or [], strict=False):
        seed["ulira"] = {"accuracy": accuracy}
    return {"per_seed": per_seed}


def test_every_method_but_remi_and_retrain_is_paired_with_remi() -> None:
    methods = {
        "original": _entry([3.0, 4.0, 5.5], [0.70, 0.72, 0.71]),
        "retrain": _entry([0.0, 0.0, 0.0], [0.50, 0.50, 0.50]),
        "remi": _entry([1.0, 1.5, 2.0], [0.55, 0.56, 0.55]),
        "finetune": _entry([2.0, 3.0, 4.5], [0.60, 0.62, 0.58]),
        "remi-no-kl": _entry([1.0, 1.5, 2.0], [0.55, 0.56, 0.55]),
    }
    table = comparisons(methods)
    assert table is not None and list(table) == ["original", "finetune", "remi-no-kl"]
    finetune = table["finetune"]["avg_gap"]
    half = T_975_DF2 * (7 / 36) ** 0.5
    assert finetune["mean_difference"] == pytest.approx(5 / 3, abs=1e-4)
    assert (finetune["ci_low"], finetune["ci_high"]) == pytest.approx((5 / 3 - half, 5 / 3 + half), abs=1e-4)
    assert finetune["n"] == 3 and finetune["excludes_zero"] is False
    # differences .05 .06 .03 -> mean .0467; the same figures as remi's give a zero-width interval at 0
    assert table["finetune"]["ulira_accuracy"]["mean_difference"] == pytest.approx(0.0467, abs=1e-4)
    assert table["remi-no-kl"]["avg_gap"] == {"mean_difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n": 3,
                                              "excludes_zero": False}
    lines = comparison_markdown(table)
    assert lines[0] == "## method − remi, 95% paired CI"
    assert "| finetune | +1.667 | [-0.231, +3.564] | no | +0.047 |" in "\n".join(lines)
    assert "no interval" not in "\n".join(lines)


def test_without_ulira_only_avg_gap_is_paired_and_without_remi_nothing() -> None:
    methods = {"remi": _entry([1.0, 2.0]), "finetune": _entry([2.0, 2.5])}
    table = comparisons(methods)
    assert table is not None and list(table["finetune"]) == ["avg_gap"]
    assert comparisons({"finetune": _entry([2.0]), "retrain": _entry([0.0])}) is None


def test_one_seed_is_recorded_as_null_and_said_so() -> None:
    table = comparisons({"remi": _entry([1.0], [0.55]), "finetune": _entry([1.25], [0.6])})
    assert table is not None
    assert table["finetune"]["avg_gap"]["ci_low"] is None
    assert table["finetune"]["ulira_accuracy"]["excludes_zero"] is None
    text = "\n".join(comparison_markdown(table))
    assert "With one seed there is no interval" in text
    assert "| finetune | +0.250 | none (n = 1) | - | +0.050 | none (n = 1) | - |" in text


def test_methods_from_other_seeds_do_not_pair() -> None:
    with pytest.raises(ValueError, match="different seeds"):
        comparisons({"remi": _entry([1.0, 2.0], seeds=[0, 1]), "finetune": _entry([1.0, 2.0], seeds=[0, 2])})


def _white_box(entry: dict[str, Any], penultimate: list[float], gradient: list[float]) -> dict[str, Any]:
    """``entry`` with white-box checks on each seed: the stem probe at 0.5 everywhere."""
    for seed, probe, norm in zip(entry["per_seed"], penultimate, gradient, strict=True):
        seed["white_box"] = {"probe_stem": {"auc": 0.5}, "probe_penultimate": {"auc": probe},
                             "gradient_norm": {"auc": norm, "tpr_at_1pct_fpr": 1.0}}
    return entry


def test_white_box_figures_are_paired_with_retrain_and_remi_is_one_of_the_rows() -> None:
    methods = {
        "original": _white_box(_entry([3.0, 4.0, 5.5]), [0.60, 0.62, 0.58], [0.58, 0.59, 0.57]),
        "retrain": _white_box(_entry([0.0, 0.0, 0.0]), [0.55, 0.56, 0.55], [0.50, 0.50, 0.50]),
        "remi": _white_box(_entry([1.0, 1.5, 2.0]), [0.56, 0.55, 0.57], [0.51, 0.50, 0.52]),
    }
    table = white_box_comparisons(methods)
    assert table is not None and list(table) == ["original", "remi"]
    # original's probe differences .05 .06 .03: mean .0467, sample variance (.0000111 + .000178 + .000278) / 2
    probe = table["original"]["probe_penultimate_auc"]
    mean = 0.14 / 3
    half = T_975_DF2 * (sum((d - mean) ** 2 for d in (0.05, 0.06, 0.03)) / 2 / 3) ** 0.5
    assert probe["mean_difference"] == pytest.approx(0.0467, abs=1e-4)
    assert (probe["ci_low"], probe["ci_high"]) == pytest.approx((mean - half, mean + half), abs=1e-4)
    assert probe["excludes_zero"] is True
    assert table["original"]["probe_stem_auc"]["excludes_zero"] is False  # the same 0.5 on every model
    assert table["remi"]["probe_penultimate_auc"]["excludes_zero"] is False  # +.01 -.01 +.02
    text = "\n".join(white_box_comparison_markdown(table))
    assert "minus retrain's on the same seed" in text and "penultimate probe − retrain" in text
    assert "| remi | +0.000 | [+0.000, +0.000] | no | +0.007 |" in text


def test_with_white_box_checks_the_methods_are_paired_with_remi_inside_too() -> None:
    methods = {
        "retrain": _white_box(_entry([0.0, 0.0]), [0.55, 0.56], [0.50, 0.50]),
        "remi": _white_box(_entry([1.0, 1.5]), [0.58, 0.59], [0.51, 0.52]),
        "remi-scope-all": _white_box(_entry([2.0, 2.5]), [0.56, 0.56], [0.51, 0.52]),
    }
    table = comparisons(methods)
    assert table is not None and list(table["remi-scope-all"]) == ["avg_gap", "probe_penultimate_auc",
                                                                   "gradient_norm_auc"]
    assert table["remi-scope-all"]["probe_penultimate_auc"]["mean_difference"] == pytest.approx(-0.025)
    assert table["remi-scope-all"]["gradient_norm_auc"]["mean_difference"] == 0.0
    text = "\n".join(comparison_markdown(table))
    assert "penultimate probe − remi" in text and "paired with ReMI's here too" in text


def test_without_white_box_checks_there_is_nothing_to_pair() -> None:
    assert white_box_comparisons({"retrain": _entry([0.0]), "remi": _entry([1.0])}) is None
