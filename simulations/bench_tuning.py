"""Equal tuning: every inexact method gets the same small budget of configurations, chosen on a validation setup.

A method's configurations are a grid over the hyper-parameters that decide how far it moves (step size,
budget, the weight of its forgetting term), its defaults among them, at most ``MAX_CONFIGS``. All of them
run on the validation seeds, ``VALIDATION_SEED`` and the ones after it, seeds no bench reports (bench seeds
count up from 0), each with its own original, split of the training pool and forget set, and a test set
carved from the pool too: the official test split, on which the bench reports ``ta``, plays no part in the
choice. Each configuration is scored by its ``avg_gap`` to each validation seed's retrain, averaged over
the seeds, and the lowest mean wins (ties go to the earlier one in the grid). ``select="deep_gap"`` scores
on ``bench_whitebox.deep_gap`` instead, which adds the white-box AUCs' distance to retrain's: the choice
must forget inside the model too, not only at its outputs. One seed's choice is mostly
noise where the configurations differ by less than two retrains do (the floor): more seeds cost time, not
configurations. ``fedunlearn bench --tuned tuning.json`` then runs the chosen ones on the reported seeds.

A ``--param`` is held fixed in every configuration and recorded in each, so ``--tuned`` carries it into
the bench: the published tuning fixes ``early_stop=true`` for the step baselines, so that every method
may stop before its budget on the same check as ReMI (``common/unlearning/stopping.py``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from fedunlearn.common.data.datasets import load_dataset, train_holdout_split
from fedunlearn.common.data.tensors import DatasetBundle
from fedunlearn.common.errors import ConfigError
from fedunlearn.simulations.bench import (
    GOLD,
    BenchConfig,
    Progress,
    SeedRun,
    Stream,
    Variant,
    derived_seed,
    run_seed,
)
from fedunlearn.simulations.bench_whitebox import deep_gap, headline
from fedunlearn.simulations.markdown import table

__all__ = ["GRIDS", "MAX_CONFIGS", "SELECTIONS", "VALIDATION_SEED", "Candidate", "Tuning", "configurations",
           "describe_seeds", "run_tuning", "tuned_params", "tuning_page", "validation_seeds", "write_tuning"]

MAX_CONFIGS = 12
# what a tuning may select on -> how tuning.json says it
SELECTIONS: Mapping[str, str] = {
    "avg_gap": f"lowest avg_gap to each validation seed's {GOLD}, averaged over the seeds",
    "deep_gap": f"lowest deep_gap (avg_gap's four figures and the three white-box AUCs in points, each against "
                f"the validation seed's {GOLD}), averaged over the seeds",
}
VALIDATION_SEED = 10_000  # far above any reported seed: its split, forget set and training are its own
DIGITS = 4

# method -> hyper-parameter -> values (as --param takes them); every grid holds the method's defaults.
# Edge rule (docs/method.md#equal-tuning), the same for every method: where the last tuning chose a value at a
# grid's edge (not tied with its neighbour), the grid gets that value doubled or halved, outward (for NegGrad+'s
# alpha, its forget weight 1 - alpha doubled); values farthest from the choice go, never a default or a chosen
# value, until the grid fits MAX_CONFIGS; where even then it would not fit, the new values are added in the
# grid's order while they fit. Applied twice (docs/bench/tuning-fmnist-edges chose the second application's
# edges); NegGrad+'s alpha 0.8 did not fit the second time.
GRIDS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "remi": {"lr": ("2e-4", "1e-3", "2e-3"), "lambda_mia": ("1", "4", "8", "16")},
    "finetune": {"epochs": ("2", "5", "10"), "lr": ("1e-3", "5e-3", "1e-2")},
    "neggrad_plus": {"epochs": ("5", "20", "40"), "lr": ("5e-4", "1e-3"), "alpha": ("0.9", "0.95")},
    "random_label": {"epochs": ("2", "5", "10"), "lr": ("2.5e-5", "5e-5", "1e-4", "4e-4")},
    "fisher": {"alpha": ("3e-4", "1e-3", "3e-3", "1e-2"), "max_std": ("0.05", "0.1", "0.2")},
    "salun": {"epochs": ("2", "5"), "lr": ("1e-4", "2e-4", "5e-4"), "mask_fraction": ("0.1", "0.5")},
}


def configurations(grid: Mapping[str, Sequence[str]]) -> list[dict[str, str]]:
    """Every combination of the grid's values, in the grid's order."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


@dataclass(frozen=True)
class Candidate:
    """One configuration of one method, run on the validation seed under its own name."""

    name: str
    method: str
    params: Mapping[str, str]


def _candidates(config: BenchConfig, grids: Mapping[str, Mapping[str, Sequence[str]]]) -> list[Candidate]:
    """A candidate per configuration of every method the bench would run; a ``--param`` is held fixed in all
    of them, and may not name a hyper-parameter that is being tuned."""
    candidates = []
    for method in config.methods:
        if method == GOLD:
            continue
        if method not in grids:
            raise ConfigError(f"no tuning grid for {method}; methods with one: {', '.join(grids)}")
        fixed = dict(config.method_params.get(method, {}))
        clash = sorted(set(fixed) & set(grids[method]))
        if clash:
            raise ConfigError(f"--param {method}.{clash[0]} is tuned; drop it or tune without it")
        grid = configurations(grids[method])
        if len(grid) > MAX_CONFIGS:
            raise ConfigError(f"{method}'s grid has {len(grid)} configurations, more than the {MAX_CONFIGS} "
                              "every method is allowed")
        candidates += [Candidate(f"{method}-{i}", method, {**fixed, **params}) for i, params in enumerate(grid)]
    return candidates


def validation_bundle(bundle: DatasetBundle) -> DatasetBundle:
    """The dataset with its test split replaced by samples of the training pool, which the validation
    seed's split then never draws from: the reported test split is not looked at while choosing."""
    size = min(len(bundle.test), len(bundle.train) // 5)
    pool, test = train_holdout_split(bundle.train, train_size=None, holdout_size=size,
                                     seed=derived_seed(VALIDATION_SEED, Stream.VALIDATION_TEST, 0))
    return replace(bundle, train=pool, test=test)


def _mean(values: Sequence[float]) -> float:
    return round(sum(values) / len(values), DIGITS)


def _checks(run: SeedRun, name: str) -> Mapping[str, Any]:
    checks = run.runs[name].white_box
    if checks is None:
        raise ValueError(f"{name} ran without white-box checks: only a deep_gap tuning runs them")
    return checks


@dataclass(frozen=True)
class Tuning:
    """The validation seeds' runs (each with its retrain, floor and every candidate, by candidate name) and
    the figure the choice is made on (a key of ``SELECTIONS``)."""

    config: BenchConfig
    candidates: Sequence[Candidate]
    runs: Sequence[SeedRun]
    select: str = "avg_gap"

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]

    def figures(self, name: str) -> dict[str, float]:
        """ua, ra, ta and mia_auc of one run (a candidate, the original, retrain), means over the seeds."""
        reports = [run.runs[name].report.to_dict() for run in self.runs]
        return {k: _mean([float(report[k]) for report in reports]) for k in ("ua", "ra", "ta", "mia_auc")}

    def floor_gaps(self) -> list[float]:
        """Each validation seed's avg_gap between two retrains: the noise below which a choice is luck."""
        return [round(run.floor_gap, DIGITS) for run in self.runs]

    def white_box(self, name: str) -> dict[str, float]:
        """The white-box AUCs of one run, means over the seeds (deep_gap tunings only: the others skip them)."""
        figures = [headline(_checks(run, name)) for run in self.runs]
        return {key: _mean([f[key] for f in figures]) for key in figures[0]}

    def _row(self, candidate: Candidate) -> dict[str, Any]:
        gaps = [round(run.gap(candidate.name), DIGITS) for run in self.runs]
        results = [run.runs[candidate.name].result for run in self.runs]
        steps = [result.steps for result in results if result is not None]
        row: dict[str, Any] = {"params": dict(candidate.params), "avg_gap": _mean(gaps), "avg_gap_per_seed": gaps,
                               **self.figures(candidate.name),
                               "seconds": _mean([run.runs[candidate.name].seconds for run in self.runs]),
                               "steps": _mean(steps) if steps else None}
        if self.select == "deep_gap":
            deep = [round(deep_gap(gap, _checks(run, candidate.name), _checks(run, GOLD)), DIGITS)
                    for gap, run in zip(gaps, self.runs, strict=True)]
            row |= {"deep_gap": _mean(deep), "deep_gap_per_seed": deep, "white_box": self.white_box(candidate.name)}
        return row

    def methods(self) -> dict[str, dict[str, Any]]:
        """method -> its chosen configuration, that configuration's avg_gap, and every configuration's row."""
        result: dict[str, dict[str, Any]] = {}
        for candidate in self.candidates:
            entry = result.setdefault(candidate.method, {"configurations": []})
            entry["configurations"].append(self._row(candidate))
        for entry in result.values():
            best = min(entry["configurations"], key=lambda row: row[self.select])  # the first of equals
            entry["chosen"], entry["avg_gap"] = best["params"], best["avg_gap"]
            if self.select != "avg_gap":
                entry[self.select] = best[self.select]
        return result


def run_tuning(config: BenchConfig, progress: Progress = lambda _: None,
               grids: Mapping[str, Mapping[str, Sequence[str]]] = GRIDS, *, validation_seeds: int = 1,
               select: str = "avg_gap") -> Tuning:
    """Run every method's grid on each of ``validation_seeds`` validation seeds, against that seed's retrain,
    to choose on ``select`` (``SELECTIONS``; deep_gap also runs every model's white-box checks)."""
    config.validate()
    if validation_seeds < 1:
        raise ConfigError(f"tuning needs at least one validation seed, got {validation_seeds}")
    if select not in SELECTIONS:
        raise ConfigError(f"a tuning selects on one of {', '.join(SELECTIONS)}, not {select!r}")
    candidates = _candidates(config, grids)
    variants = tuple(Variant(c.name, c.method, c.params) for c in candidates)
    validation = replace(config, methods=(GOLD,), method_params={}, variants=variants, seeds=1,
                         ulira_shadows=0, edge=False, white_box=select == "deep_gap")
    forget, params = validation.validate()
    bundle = validation_bundle(load_dataset(config.dataset, root=config.data_root, download=config.download))
    runs = [run_seed(bundle, validation, forget, params, VALIDATION_SEED + i, progress)
            for i in range(validation_seeds)]
    return Tuning(config, candidates, runs, select)


# what a tuning must share with the bench that uses it: the same setup, or the choice was made for another
SETUP = ("dataset", "model", "forget", "train_size", "holdout_size", "recipe", "reference_models")


def _setup(config: BenchConfig) -> dict[str, Any]:
    return {key: asdict(config.recipe) if key == "recipe" else getattr(config, key) for key in SETUP}


def _control(tuning: Tuning, name: str) -> dict[str, Any]:
    figures: dict[str, Any] = tuning.figures(name)
    return figures | {"white_box": tuning.white_box(name)} if tuning.select == "deep_gap" else figures


def write_tuning(tuning: Tuning, out: Path, *, command: str | None,
                 provenance: tuple[str, bool]) -> dict[str, Any]:
    """tuning.json (what ``bench --tuned`` reads, and every configuration's figures) and tuning.md."""
    commit, dirty = provenance
    methods, floors = tuning.methods(), tuning.floor_gaps()
    payload = {
        "setup": _setup(tuning.config),
        "validation": {"seeds": tuning.seeds, "sizes": dict(tuning.runs[0].sizes),
                       "test": "carved from the training pool, disjoint from every seed's split"},
        "selection": SELECTIONS[tuning.select], "select": tuning.select,
        "floor_avg_gap": _mean(floors), "floor_avg_gap_per_seed": floors,
        "controls": {name: _control(tuning, name) for name in ("original", GOLD)},  # doing nothing; the target
        "methods": methods,
        "commit": commit, "worktree_dirty": dirty, "command": command,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "tuning.json").write_text(json.dumps(payload, indent=2))
    (out / "tuning.md").write_text(tuning_page(payload))
    return payload


def validation_seeds(payload: Mapping[str, Any]) -> list[int]:
    """The seeds a tuning.json chose on (files written before tuning took several name one, ``seed``)."""
    validation = payload["validation"]
    return list(validation["seeds"]) if "seeds" in validation else [validation["seed"]]


def describe_seeds(seeds: Sequence[int]) -> str:
    return f"validation seed {seeds[0]}" if len(seeds) == 1 else f"validation seeds {', '.join(map(str, seeds))}"


def _white_box_cells(figures: Mapping[str, float]) -> list[str]:
    return [f"{figures[key]:.3f}" for key in ("probe_stem_auc", "probe_penultimate_auc", "gradient_norm_auc")]


def tuning_page(payload: Mapping[str, Any]) -> str:
    """tuning.md, from tuning.json's payload alone."""
    setup, seeds = payload["setup"], validation_seeds(payload)
    deep = payload.get("select") == "deep_gap"  # tunings written before deep_gap existed chose on avg_gap
    spread = f" (per seed {', '.join(f'{g:.2f}' for g in payload['floor_avg_gap_per_seed'])})" if len(seeds) > 1 else ""
    lines = [f"# Tuning: {setup['dataset']} / {setup['model']} / {setup['forget']}", "",
             f"`{payload['command']}` at commit `{payload['commit']}`. Every method ran each configuration of its "
             f"grid (at most {MAX_CONFIGS}) on {describe_seeds(seeds)}, which no bench reports, with a test set "
             f"carved from the training pool; chosen: the {payload['selection']}. Two retrains of a seed differ by "
             f"avg_gap {payload['floor_avg_gap']:.2f}{spread}: closer choices are noise. Figures are means over "
             f"the seeds; the control figures too."]
    inside = ", white-box AUCs stem / penultimate / gradient-norm "
    described = (f"{name}: ua {c['ua']:.2f}, ta {c['ta']:.2f}, mia_auc {c['mia_auc']:.3f}"
                 + (inside + " / ".join(_white_box_cells(c["white_box"])) if deep else "")
                 for name, c in payload["controls"].items())
    lines[-1] += " Controls: " + "; ".join(described) + "."
    header = ["configuration", "avg_gap", "per seed", "ua", "ta", "mia_auc", "seconds", ""]
    if deep:
        header[3:3] = ["deep_gap", "deep per seed", "stem probe", "penultimate probe", "gradient-norm"]
    for method, entry in payload["methods"].items():
        rows = []
        for row in entry["configurations"]:
            cells = [", ".join(f"{k}={v}" for k, v in row["params"].items()), f"{row['avg_gap']:.2f}",
                     # a tuning on one seed written before tunings took several kept no per-seed list
                     ", ".join(f"{g:.2f}" for g in row.get("avg_gap_per_seed", [row["avg_gap"]])),
                     f"{row['ua']:.2f}", f"{row['ta']:.2f}", f"{row['mia_auc']:.3f}", f"{row['seconds']:.1f}",
                     "chosen" if row["params"] == entry["chosen"] else ""]
            if deep:
                cells[3:3] = [f"{row['deep_gap']:.2f}", ", ".join(f"{g:.2f}" for g in row["deep_gap_per_seed"]),
                              *_white_box_cells(row["white_box"])]
            rows.append(cells)
        lines += ["", f"## {method}", "", *table(header, rows)]
    return "\n".join(lines) + "\n"


def tuned_params(path: Path, config: BenchConfig) -> dict[str, dict[str, str]]:
    """The chosen hyper-parameters for every inexact method ``config`` runs, with its ``--param`` on top
    (none may name a tuned one); refuses a tuning made for another setup or missing a method."""
    try:
        payload = json.loads(path.read_text())
        chosen = {method: entry["chosen"] for method, entry in payload["methods"].items()}
        setup = payload["setup"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"--tuned {path}: not a tuning.json written by `fedunlearn bench --tune` ({exc})") from None
    differs = [key for key, value in _setup(config).items() if setup.get(key) != value]
    if differs:
        raise ConfigError(f"--tuned {path} was tuned for another setup ({', '.join(differs)} differ); tune this "
                          "one with `fedunlearn bench --tune` and the same options")
    params: dict[str, dict[str, str]] = {}
    for method in config.methods:
        if method == GOLD:
            continue
        if method not in chosen:
            raise ConfigError(f"--tuned {path} has no tuning for {method}; tune it too or leave it out")
        given = config.method_params.get(method, {})
        clash = sorted(set(given) & set(chosen[method]))
        if clash:
            raise ConfigError(f"--param {method}.{clash[0]} overrides a tuned value; drop one of them")
        params[method] = {**chosen[method], **given}
    return params
