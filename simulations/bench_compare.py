"""Every method's difference to ReMI over the bench's seeds, with a paired 95% t interval; the white-box
checks' difference to retrain the same way.

Every method of a seed starts from the same original and forgets the same set, so what changes from seed to
seed (the split, the forget set, the original) moves all of them together. Differencing per seed cancels
that shared part, and a t interval over the n differences (n - 1 degrees of freedom) says whether what is
left could be chance. One seed has no degrees of freedom and so no interval: it is recorded as null, never
made up. The white-box checks are paired with retrain instead of ReMI: what they ask is whether a model's
insides still tell the forget set from unseen samples where retraining's do not, and the original's row says
whether the seeds could see that at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from fedunlearn.simulations.bench import GOLD
from fedunlearn.simulations.bench_whitebox import AUC_CHECKS, headline
from fedunlearn.simulations.markdown import table as markdown_table

__all__ = [
    "DEEP_AGAINST_REFERENCE",
    "LEVEL",
    "REFERENCE",
    "PairedInterval",
    "comparison_markdown",
    "comparisons",
    "paired_interval",
    "white_box_comparison_markdown",
    "white_box_comparisons",
]

REFERENCE = "remi"
LEVEL = 0.95
DIGITS = 4

# figure name in ``comparisons`` -> how to read it off a ``per_seed`` entry
FIGURES: Mapping[str, Callable[[Mapping[str, Any]], float]] = {
    "avg_gap": lambda seed: seed["avg_gap"],
    "ulira_accuracy": lambda seed: seed["ulira"]["accuracy"],
}
# the white-box figures also paired with ReMI: the two that can see remembering (the stem is ReMI's own under
# scope=top, and reads the same on every model that froze it)
DEEP_AGAINST_REFERENCE = ("probe_penultimate_auc", "gradient_norm_auc")
LABELS: Mapping[str, str] = {"avg_gap": "avg_gap", "ulira_accuracy": "U-LiRA accuracy", "probe_stem_auc": "stem probe",
                             "probe_penultimate_auc": "penultimate probe", "gradient_norm_auc": "gradient-norm"}


def _white_box_figure(figure: str) -> Callable[[Mapping[str, Any]], float]:
    """How to read one of ``AUC_CHECKS`` off a ``per_seed`` entry."""
    return lambda seed: headline(seed["white_box"])[figure]


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


def _paired(methods: Mapping[str, Mapping[str, Any]], reference: str, figures: Mapping[str, Callable[[Any], float]],
            skip: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """<name>.<figure>: the paired interval of every method but ``skip`` against ``reference``, seed by seed."""
    seeds = [s["seed"] for s in methods[reference]["per_seed"]]
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for name, entry in methods.items():
        if name in skip:
            continue
        if [s["seed"] for s in entry["per_seed"]] != seeds:
            raise ValueError(f"{name} and {reference} ran on different seeds; their figures do not pair")
        result[name] = {figure: paired_interval([read(s) for s in entry["per_seed"]],
                                                [read(s) for s in methods[reference]["per_seed"]]).to_dict()
                        for figure, read in figures.items()}
    return result


def comparisons(methods: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]] | None:
    """comparisons.<name>.<figure> for every method and variant but ReMI and retrain (the yardstick):
    avg_gap, U-LiRA accuracy where it ran, and the penultimate probe's and the gradient-norm attack's AUC
    where the white-box checks ran. None when ReMI did not run: there is nothing to pair with."""
    if REFERENCE not in methods:
        return None
    first = methods[REFERENCE]["per_seed"][0]
    figures = {name: read for name, read in FIGURES.items() if name != "ulira_accuracy" or "ulira" in first}
    if "white_box" in first:
        figures |= {figure: _white_box_figure(figure) for figure in DEEP_AGAINST_REFERENCE}
    return _paired(methods, REFERENCE, figures, (REFERENCE, GOLD))


def white_box_comparisons(methods: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]] | None:
    """<name>.<figure>: every model's white-box AUCs (both probes, the gradient-norm attack) minus retrain's,
    paired per seed; None where the bench ran without white-box checks."""
    if "white_box" not in methods[GOLD]["per_seed"][0]:
        return None
    return _paired(methods, GOLD, {figure: _white_box_figure(figure) for figure in AUC_CHECKS}, (GOLD,))


def _cells(figures: Mapping[str, Any]) -> list[str]:
    if figures["ci_low"] is None:
        return [f"{figures['mean_difference']:+.3f}", "none (n = 1)", "-"]
    return [f"{figures['mean_difference']:+.3f}", f"[{figures['ci_low']:+.3f}, {figures['ci_high']:+.3f}]",
            "yes" if figures["excludes_zero"] else "no"]


def _interval_table(table: Mapping[str, Mapping[str, Mapping[str, Any]]], reference: str) -> list[str]:
    """One row per method: per figure the mean difference to ``reference``, its interval, whether it excludes 0."""
    figures = list(next(iter(table.values())))
    cells = (f"− {reference}", "95% CI", "excludes 0")
    header = ["method", *(f"{LABELS[f]} {cell}" for f in figures for cell in cells)]
    return markdown_table(header, [[name, *(cell for f in figures for cell in _cells(row[f]))]
                                   for name, row in table.items()])


def _no_interval_note(n: int) -> str:
    return (" With one seed there is no interval (no degrees of freedom): the differences are shown alone, and "
            "bench.json records the interval as null.") if n < 2 else ""


def comparison_markdown(table: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """bench.md's section: one row per method, the mean difference, its interval and whether it excludes 0."""
    first = next(iter(table.values()), None)
    if first is None:
        return []
    n = first["avg_gap"]["n"]
    return [f"## method − {REFERENCE}, 95% paired CI", "",
            f"Per seed, the method's figure minus {REFERENCE}'s on the same seed (same original, same forget set); "
            f"the mean over the {n} seeds and its 95% t interval (n − 1 degrees of freedom). Positive: "
            f"{REFERENCE}'s figure is the lower one. `excludes 0`: the seeds rule out no difference."
            + (" The white-box AUCs (where they ran) are paired with ReMI's here too: whether a method forgets "
               "deeper inside than ReMI, where the table below pairs each with retrain."
               if "probe_penultimate_auc" in first else "")
            + _no_interval_note(n), "",
            *_interval_table(table, REFERENCE)]


def white_box_comparison_markdown(table: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """bench.md's white-box section's second table: every model's AUCs minus retrain's, paired per seed."""
    n = next(iter(table.values()))["probe_penultimate_auc"]["n"]
    return [f"Each model's white-box AUCs minus {GOLD}'s on the same seed, the mean over the {n} seeds and its "
            f"95% t interval. Positive: the model's insides separate the forget set from unseen samples more than "
            f"{GOLD}'s do. Where the original's interval holds 0, the seeds cannot tell remembering from forgetting "
            "on that check, and another row's interval holding 0 there proves nothing." + _no_interval_note(n), "",
            *_interval_table(table, GOLD)]
