"""Every method's difference to ReMI over the bench's seeds, with a paired 95% t interval.

Every method of a seed starts from the same original and forgets the same set, so what changes from seed to
seed (the split, the forget set, the original) moves all of them together. Differencing per seed cancels
that shared part, and a t interval over the n differences (n - 1 degrees of freedom) says whether what is
left could be chance. One seed has no degrees of freedom and so no interval: it is recorded as null, never
made up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from fedunlearn.simulations.bench import GOLD

__all__ = ["LEVEL", "REFERENCE", "PairedInterval", "comparison_markdown", "comparisons", "paired_interval"]

REFERENCE = "remi"
LEVEL = 0.95
DIGITS = 4

# figure name in ``comparisons`` -> how to read it off a ``per_seed`` entry
FIGURES: Mapping[str, Callable[[Mapping[str, Any]], float]] = {
    "avg_gap": lambda seed: seed["avg_gap"],
    "ulira_accuracy": lambda seed: seed["ulira"]["accuracy"],
}


@dataclass(frozen=True)
class PairedInterval:
    """Mean of (method - reference) over n paired seeds and its 95% interval; low/high None when n = 1."""

    mean: float
    low: float | None
    high: float | None
    n: int

    @property
    def excludes_zero(self) -> bool | None:
        """Whether the seeds rule out "no difference"; None where there is no interval to ask."""
        if self.low is None or self.high is None:
            return None
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, DIGITS)

        return {"mean_difference": rounded(self.mean), "ci_low": rounded(self.low), "ci_high": rounded(self.high),
                "n": self.n, "excludes_zero": self.excludes_zero}


def paired_interval(values: Sequence[float], reference: Sequence[float]) -> PairedInterval:
    """values[i] - reference[i] per seed i: mean ± t(0.975, n - 1) · sd / sqrt(n), sd with n - 1 in the
    denominator (the sample's, not the population's)."""
    if len(values) != len(reference) or not values:
        raise ValueError(f"paired figures need the same non-zero number of seeds, got {len(values)} and "
                         f"{len(reference)}")
    differences = np.asarray(values, dtype=float) - np.asarray(reference, dtype=float)
    n, mean = len(differences), float(differences.mean())
    if n < 2:
        return PairedInterval(mean, None, None, n)
    half = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1)) * float(differences.std(ddof=1)) / math.sqrt(n)
    return PairedInterval(mean, mean - half, mean + half, n)


def comparisons(methods: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]] | None:
    """comparisons.<name>.<figure> for every method and variant but ReMI and retrain (the yardstick):
    avg_gap, and U-LiRA accuracy where it ran. None when ReMI did not run: there is nothing to pair with."""
    if REFERENCE not in methods:
        return None
    reference = methods[REFERENCE]["per_seed"]
    figures = [name for name in FIGURES if name != "ulira_accuracy" or "ulira" in reference[0]]
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for name, entry in methods.items():
        if name in (REFERENCE, GOLD):
            continue
        if [s["seed"] for s in entry["per_seed"]] != [s["seed"] for s in reference]:
            raise ValueError(f"{name} and {REFERENCE} ran on different seeds; their figures do not pair")
        result[name] = {figure: paired_interval([FIGURES[figure](s) for s in entry["per_seed"]],
                                                [FIGURES[figure](s) for s in reference]).to_dict()
                        for figure in figures}
    return result


def _cells(figures: Mapping[str, Any]) -> list[str]:
    if figures["ci_low"] is None:
        return [f"{figures['mean_difference']:+.3f}", "none (n = 1)", "-"]
    return [f"{figures['mean_difference']:+.3f}", f"[{figures['ci_low']:+.3f}, {figures['ci_high']:+.3f}]",
            "yes" if figures["excludes_zero"] else "no"]


def comparison_markdown(table: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """bench.md's section: one row per method, the mean difference, its interval and whether it excludes 0."""
    first = next(iter(table.values()), None)
    if first is None:
        return []
    figures = list(first)
    n = first["avg_gap"]["n"]
    lines = [
        f"## method − {REFERENCE}, 95% paired CI",
        "",
        f"Per seed, the method's figure minus {REFERENCE}'s on the same seed (same original, same forget set); "
        f"the mean over the {n} seeds and its 95% t interval (n − 1 degrees of freedom). Positive: "
        f"{REFERENCE}'s figure is the lower one. `excludes 0`: the seeds rule out no difference.",
    ]
    if n < 2:
        lines[-1] += (" With one seed there is no interval (no degrees of freedom): the differences are shown "
                      "alone, and bench.json records the interval as null.")
    labels = {"avg_gap": "avg_gap", "ulira_accuracy": "U-LiRA accuracy"}
    cells = (f"− {REFERENCE}", "95% CI", "excludes 0")
    header = ["method", *(f"{labels[f]} {cell}" for f in figures for cell in cells)]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(cell for f in figures for cell in _cells(row[f])) + " |")
    return lines
