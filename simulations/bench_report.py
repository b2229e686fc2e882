"""Turn benchmark seed runs into ``bench.json``, ``bench.md`` and plots.

Metrics are means over seeds with ``<metric>_std`` beside them, under the
DESIGN metric names, so tables from different runs line up; every method also
keeps its per-seed values (``per_seed``), from which the means were taken. The
JSON names the commit and the command that made it, so a table in ``docs/``
can be traced and regenerated. Beside the methods it keeps the floor (two
retrains' avg_gap per seed), every method's paired difference to ReMI and,
where the white-box checks ran, every model's paired difference to retrain on
them (``bench_compare``); a variant is a method entry that names what it ablates.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from fedunlearn.common.audit.calibrated import CALIBRATED_ATTACKS
from fedunlearn.common.audit.report import GAP_METRICS, PRIMARY_ATTACK
from fedunlearn.common.provenance import git_commit
from fedunlearn.simulations.bench import GOLD, BenchConfig, SeedRun, Variant
from fedunlearn.simulations.bench_compare import (
    comparison_markdown,
    comparisons,
    white_box_comparison_markdown,
    white_box_comparisons,
)
from fedunlearn.simulations.bench_ulira import SeedULira
from fedunlearn.simulations.bench_whitebox import (
    RELEARN_EPOCHS,
    RELEARN_SHARE,
    WHITE_BOX_FIGURES,
    headline,
    powerless,
)
from fedunlearn.simulations.markdown import table

__all__ = ["ATTACK_FIELDS", "METRICS", "bench_page", "config_dict", "draw_plots", "mean_std",
           "strongest_reference_attack", "summarize", "write_report"]

METRICS = (*GAP_METRICS, "mia_auc", "tpr_at_1pct_fpr", "tpr_at_01pct_fpr", "seconds", "avg_gap")
ATTACK_FIELDS = ("auc", "tpr_at_1pct_fpr", "tpr_at_01pct_fpr")  # every attack's figures, AUC 0-1, TPRs percent
DIGITS = 4


def _seed_entry(run: SeedRun, method: str, ulira: SeedULira | None) -> dict[str, Any]:
    """Every figure of one method on one seed: the metrics, each attack, how it ran, its U-LiRA."""
    method_run = run.runs[method]
    report = method_run.report.to_dict()
    values = {k: float(v) for k, v in report.items() if k in METRICS}
    values["seconds"] = method_run.seconds
    values["avg_gap"] = run.gap(method)
    entry: dict[str, Any] = {"seed": run.seed, **{k: round(v, DIGITS) for k, v in values.items()}}
    entry["attacks"] = {name: {k: round(v, DIGITS) for k, v in figures.items()}
                        for name, figures in report["attacks"].items()}
    if method_run.result is not None:
        entry["steps"] = method_run.result.steps
        entry["stop_reason"] = method_run.result.stop_reason
    if method_run.white_box is not None:
        entry["white_box"] = dict(method_run.white_box)
    if ulira is not None:
        result = ulira.results[method]
        entry["ulira"] = {"accuracy": round(result.accuracy, DIGITS), "cases": result.cases,
                          "targets": result.targets}
    return entry


def mean_std(per_seed: Sequence[Mapping[str, float]], metrics: Sequence[str], *,
             digits: int | None = 4) -> dict[str, float]:
    """{metric: mean, metric_std: std} over seeds (population std: 0 for one seed); ``digits=None`` keeps
    every digit (parity figures of 1e-6 would round to 0)."""
    entry: dict[str, float] = {}
    for metric in metrics:
        values = np.array([v[metric] for v in per_seed], dtype=float)
        mean, std = float(values.mean()), float(values.std())
        entry[metric] = mean if digits is None else round(mean, digits)
        entry[f"{metric}_std"] = std if digits is None else round(std, digits)
    return entry


def _aggregate(per_seed: Sequence[Mapping[str, Any]], shadows: int) -> dict[str, Any]:
    """Means and stds over seeds of everything ``_seed_entry`` holds (stop reasons stay per seed)."""
    entry: dict[str, Any] = mean_std(per_seed, METRICS)
    entry["attacks"] = {name: mean_std([seed["attacks"][name] for seed in per_seed], ATTACK_FIELDS)
                        for name in per_seed[0]["attacks"]}
    if "steps" in per_seed[0]:
        entry |= mean_std(per_seed, ("steps",))
    if "ulira" in per_seed[0]:
        entry["ulira"] = {**mean_std([seed["ulira"] for seed in per_seed], ("accuracy",)), "shadows": shadows}
    if "white_box" in per_seed[0]:
        entry["white_box"] = mean_std([headline(seed["white_box"]) for seed in per_seed], WHITE_BOX_FIGURES)
        if "relearn" in per_seed[0]["white_box"]:
            entry["white_box"]["relearn_epochs"] = [seed["white_box"]["relearn"]["epochs"] for seed in per_seed]
    return entry


def summarize(runs: Sequence[SeedRun], ulira: Sequence[SeedULira] = (),
              variants: Sequence[Variant] = ()) -> dict[str, dict[str, Any]]:
    """methods.<name> -> {metric: mean, metric_std: std, attacks, ulira, params, per_seed} over seeds; a
    variant's entry also names its method (``variant_of``) and the hyper-parameters it fixed (``overrides``)."""
    if ulira and [u.seed for u in ulira] != [run.seed for run in runs]:
        raise ValueError("U-LiRA results must come one per bench seed, in the same order")
    shadows = ulira[0].results["original"].shadows if ulira else 0
    summary: dict[str, dict[str, Any]] = {}
    for method in runs[0].runs:
        per_seed = [_seed_entry(run, method, ulira[i] if ulira else None) for i, run in enumerate(runs)]
        entry = _aggregate(per_seed, shadows)
        result = runs[0].runs[method].result
        if result is not None:
            entry["params"] = dict(result.params)
        entry["per_seed"] = per_seed
        summary[method] = entry
    for variant in variants:
        entry = summary[variant.name]
        entry["variant_of"] = variant.method
        entry["overrides"] = {key: entry["params"][key] for key in variant.params}
    return summary


def _floor(runs: Sequence[SeedRun]) -> dict[str, Any]:
    """floor.avg_gap: per seed the gap between retrain and a second retrain under another training seed;
    floor.seconds: that second training, counted in no method's time."""
    def figure(values: list[float]) -> dict[str, Any]:
        array = np.array(values)
        return {"mean": round(float(array.mean()), DIGITS), "std": round(float(array.std()), DIGITS),
                "per_seed": [round(v, DIGITS) for v in values]}

    return {"method": GOLD, "avg_gap": figure([run.floor_gap for run in runs]),
            "seconds": figure([run.floor.seconds for run in runs])}


def _references(runs: Sequence[SeedRun]) -> dict[str, Any]:
    """The audit's reference models: trained once per seed, their cost apart from every method's, and
    whether every method's task carried their expectation (``expected_confidence``: given or not; its
    ``samples`` per seed, the pool and hold-out samples at least one reference never trained on)."""
    per_seed = [{"seed": run.seed, "train_size": run.references.train_size,
                 "seconds": round(run.references.seconds, DIGITS),
                 "expected_samples": len(run.data.task_expectation or {})} for run in runs]
    return {"models": runs[0].references.count, "data": "a random half of the seed's retain set each (offline)",
            "expected_confidence": all(run.data.task_expectation is not None for run in runs),
            **mean_std(per_seed, ("seconds",)), "per_seed": per_seed}


def _expectation_note(payload: Mapping[str, Any]) -> str:
    """One sentence: did the methods' tasks carry the references' expectation, and did ReMI use it."""
    if not payload["references"]["expected_confidence"]:
        return ("Methods were given no reference expectation (class forgetting relabels the reference set); "
                "ReMI measured raw membership.")
    remi = payload["methods"].get("remi", {}).get("params", {})
    used = (" ReMI measured membership as the excess over it." if remi.get("calibrated")
            else " ReMI ignored it (remi.calibrated=false)." if remi else "")
    return ("Every method's task carried what the references that never trained on a sample expect of it "
            f"(`expected_confidence`).{used}")


def _floor_markdown(floor: Mapping[str, Any]) -> list[str]:
    gap, seconds = floor["avg_gap"], floor["seconds"]
    per_seed = ", ".join(f"{v:.2f}" for v in gap["per_seed"])
    return [
        "## Floor: retrain against retrain",
        "",
        f"Per seed a second {GOLD}, on the same retain set with the same recipe and another training seed; the "
        f"avg_gap between the two retrains is {gap['mean']:.2f} ± {gap['std']:.2f} (per seed: {per_seed}). "
        f"Below this, no difference means anything. Its training ({seconds['mean']:.1f} s per seed) is counted "
        "in no method's seconds.",
    ]


def _variants_note(methods: Mapping[str, Mapping[str, Any]]) -> str:
    """One sentence naming each variant's method and what it fixed; empty without variants."""
    described = [f"`{name}` is {entry['variant_of']} with "
                 + (", ".join(f"{k}={v}" for k, v in entry["overrides"].items()) or "its defaults")
                 for name, entry in methods.items() if "variant_of" in entry]
    return (" Variants, on the same seeds and originals: " + "; ".join(described) + ".") if described else ""


def _ulira(ulira: Sequence[SeedULira]) -> dict[str, Any] | None:
    if not ulira:
        return None
    per_seed = [{"seed": u.seed, "targets": u.targets, "forget_size": u.forget_size, "train_size": u.train_size,
                 "seconds": round(u.seconds, DIGITS)} for u in ulira]
    return {"shadows": ulira[0].results["original"].shadows, **mean_std(per_seed, ("seconds",)),
            "per_seed": per_seed}


def config_dict(config: BenchConfig) -> dict[str, Any]:
    """The configuration as bench.json and config.json record it."""
    resolved = asdict(config)
    resolved["methods"] = list(config.all_methods)
    resolved["data_root"] = str(config.data_root) if config.data_root else None
    resolved["tuned"] = str(config.tuned) if config.tuned else None
    resolved["method_params"] = {k: dict(v) for k, v in config.method_params.items()}
    return resolved


def _cell(figures: Mapping[str, Any], key: str) -> str:
    precision = 3 if "auc" in key or key == "accuracy" else 2
    return f"{figures[key]:.{precision}f} ± {figures[key + '_std']:.{precision}f}"


def strongest_reference_attack(entry: Mapping[str, Any]) -> str:
    """The reference-model attack (LiRA or RMIA) with the higher mean TPR at 1% FPR: the one a table should
    quote, chosen on the means so that no seed's luck picks it."""
    return max(CALIBRATED_ATTACKS.names(), key=lambda name: entry["attacks"][name]["tpr_at_1pct_fpr"])


def _per_example_section(payload: Mapping[str, Any]) -> list[str]:
    """Per method: the strongest reference attack's TPR at 1% FPR, the loss attack's, U-LiRA, each next to
    retrain's."""
    methods, references, ulira = payload["methods"], payload["references"], payload["ulira"]
    gold = methods[GOLD]
    lines = [
        "## Per-example attacks" + (" and U-LiRA" if ulira is not None else ""),
        "",
        f"LiRA and RMIA (offline) judge each forget sample against {references['models']} reference models per "
        f"seed, each trained on a random half of the retain set ({references['seconds']:.1f} s per seed, "
        "not counted in any method's seconds); non-members are the same test samples as above. TPRs at 1% FPR "
        "in percent; `strongest` is the better of LiRA and RMIA on the means.",
    ]
    if ulira is not None:
        lines[-1] += (
            f" U-LiRA: {ulira['shadows']} shadow splits per seed ({ulira['seconds']:.1f} s per seed); the share "
            "of per-sample calls that tell the method's model from a retrained one (0.5 = indistinguishable; "
            "retrain's own row is the floor of two independent retrainings, original's the do-nothing ceiling)."
        )
    header = ["method", "strongest TPR@1%", "retrain's", f"{PRIMARY_ATTACK} TPR@1%", "retrain's"]
    if ulira is not None:
        header += ["U-LiRA accuracy", "retrain's"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, entry in methods.items():
        best = strongest_reference_attack(entry)
        cells = [f"{_cell(entry['attacks'][best], 'tpr_at_1pct_fpr')} ({best})",
                 _cell(gold["attacks"][best], "tpr_at_1pct_fpr"),
                 _cell(entry["attacks"][PRIMARY_ATTACK], "tpr_at_1pct_fpr"),
                 _cell(gold["attacks"][PRIMARY_ATTACK], "tpr_at_1pct_fpr")]
        if ulira is not None:
            cells += [_cell(entry["ulira"], "accuracy"), _cell(gold["ulira"], "accuracy")]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def _restored_note(payload: Mapping[str, Any]) -> str:
    restored = payload.get("restored_seeds") or {}  # bench.json files older than resuming have none
    if not restored:
        return ""
    made = ", ".join(f"seed {seed} at `{m['commit'][:12]}`" + (" (dirty)" if m["dirty"] else "")
                     for seed, m in restored.items())
    return f"; taken back from an earlier sitting (`--resume`): {made}"


def _tuning_note(config: Mapping[str, Any]) -> str:
    if config.get("tuned") is None:  # also bench.json files older than tuning
        return " Every method ran its defaults and any `--param` given: none was tuned for this setup."
    return (f" Every inexact method ran the configuration its equal tuning chose (`{config['tuned']}`, on a "
            "validation seed this table does not report); config.json lists them.")


def _white_box_section(methods: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Per method the probes' and the gradient attack's figures, and the relearning epochs where they ran."""
    relearn = "relearn_epochs" in methods["original"]["white_box"]
    header = ["method", "probe AUC, stem", "probe AUC, penultimate", "gradient-norm AUC", "gradient-norm TPR@1%"]
    lines = ["## White-box checks", "",
             "Forget samples against test samples of their classes, the same draw for every model of a seed. A "
             "linear probe on each layer's features (out-of-fold AUC) and the per-sample gradient-norm attack "
             "read inside the model: one that forgot only at its outputs still separates the forget set here, "
             "where retrain does not. Read each row against retrain's: on small groups a probe that finds "
             "nothing scores below 0.5 out of fold, not at it."]
    if relearn:
        header.append("relearn epochs per seed")
        lines[-1] += (f" Relearn: epochs of fine-tuning on a few samples of the class until the model is back at "
                      f"{RELEARN_SHARE:.0%} of the original's accuracy on it (- = not within {RELEARN_EPOCHS}, or not "
                      "measured where the original got none of the class right: bench.json says which).")
    seed = methods["original"]["per_seed"][0]["white_box"]
    blind = powerless(methods["original"]["white_box"], methods[GOLD]["white_box"],
                      seed["probe_stem"]["members"], seed["probe_stem"]["nonmembers"])
    if blind:
        lines[-1] += (" On this bench the original scores within two standard errors of retrain on "
                      + ", ".join(f"`{key}`" for key in blind) + ": there these checks cannot tell a model "
                      "that remembers from one that forgot, and a method matching retrain proves nothing.")
    lines += ["", *table(header, [
        [name, *(_cell(entry["white_box"], key) for key in WHITE_BOX_FIGURES),
         *([", ".join("-" if e is None else str(e) for e in entry["white_box"]["relearn_epochs"])] if relearn else [])]
        for name, entry in methods.items()])]
    paired = white_box_comparisons(methods)
    return [*lines, "", *white_box_comparison_markdown(paired)] if paired else lines


def _markdown(payload: Mapping[str, Any]) -> str:
    header = ["method", *METRICS]
    dirty = " (with uncommitted changes)" if payload["worktree_dirty"] else ""
    lines = [
        f"# fedunlearn bench: {payload['dataset']} / {payload['model']} / forget {payload['forget']}",
        "",
        f"seeds: {len(payload['seeds'])}, device: {payload['device']}, sizes: {payload['sizes']}",
        "",
        f"commit `{payload['commit']}`{dirty}; command: `{payload['command']}`" + _restored_note(payload),
        "",
        "Percentages 0-100, AUC 0-1, mean ± std over seeds; `avg_gap` is the mean |x - retrain| "
        "over ua, ra, ta, mia_efficacy (lower is better). " + _expectation_note(payload)
        + _variants_note(payload["methods"]) + _tuning_note(payload["config"]),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for method, entry in payload["methods"].items():
        lines.append(f"| {method} | " + " | ".join(_cell(entry, m) for m in METRICS) + " |")
    lines += ["", *_floor_markdown(payload["floor"])]
    paired = comparisons(payload["methods"])  # from the per-seed figures: a page redrawn at HEAD pairs what HEAD pairs
    if paired:
        lines += ["", *comparison_markdown(paired)]
    lines += ["", *_per_example_section(payload)]
    if "white_box" in payload["methods"]["original"]:
        lines += ["", *_white_box_section(payload["methods"])]
    return "\n".join(lines) + "\n"


# the loss attack's ROC per method on the first seed, kept in bench.json on this false-positive grid so that
# roc.png can be drawn again from the JSON alone (the full curve has a point per sample)
ROC_FPR = np.geomspace(1e-4, 1.0, 121)


def _roc_curves(run: SeedRun) -> dict[str, Any]:
    curves = {}
    for method, method_run in run.runs.items():
        fpr, tpr = method_run.report.roc
        curves[method] = {"auc": round(method_run.report.mia_auc, DIGITS),
                          "tpr": [round(float(v), DIGITS) for v in np.interp(ROC_FPR, fpr, tpr)]}
    return {"seed": run.seed, "attack": "loss", "fpr": [round(float(v), 6) for v in ROC_FPR], "curves": curves}


def _plot_roc(roc: Mapping[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    for method, curve in roc["curves"].items():
        ax.plot(roc["fpr"], np.maximum(curve["tpr"], 1e-4), label=f"{method} ({curve['auc']:.3f})")
    ax.plot([1e-4, 1], [1e-4, 1], "k:", linewidth=0.8)
    ax.set(xscale="log", yscale="log", xlabel="false positive rate", ylabel="true positive rate",
           title=f"{roc['attack']} attack on the forget set (seed {roc['seed']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_metrics(methods: dict[str, dict[str, Any]], path: Path) -> None:
    names = list(methods)
    width = 0.8 / len(GAP_METRICS)
    fig, ax = plt.subplots(figsize=(max(6, len(names) * 1.1), 4))
    for i, metric in enumerate(GAP_METRICS):
        x = np.arange(len(names)) + i * width
        ax.bar(x, [methods[n][metric] for n in names], width,
               yerr=[methods[n][f"{metric}_std"] for n in names], label=metric)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30, ha="right")
    ax.set(ylabel="percent", title="metrics per method (mean over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(config: BenchConfig, device: str, runs: Sequence[SeedRun], out: Path, *,
                 ulira: Sequence[SeedULira] = (), command: str | None = None,
                 sections: Sequence[str] = (), provenance: tuple[str, bool] | None = None,
                 restored: Mapping[int, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Write bench.json, bench.md (``sections``, markdown, appended), roc.png, metrics.png and config.json.

    ulira: one ``run_ulira`` result per seed, or none when it was off. command: the command line that
    made the run (None when it did not come from one, e.g. a test). provenance: ``git_commit()`` taken
    when the run started; a long run's checkout may have moved on by the time it writes (default: now).
    restored: seed -> the commit of each seed taken back from an earlier sitting (``bench_checkpoint``)."""
    out.mkdir(parents=True, exist_ok=True)
    methods = summarize(runs, ulira, config.variants)
    commit, dirty = provenance if provenance is not None else git_commit()
    payload = {
        "dataset": config.dataset,
        "model": config.model,
        "forget": config.forget,
        "seeds": [run.seed for run in runs],
        "device": device,
        "commit": commit,
        "worktree_dirty": dirty,
        "restored_seeds": {str(seed): dict(made) for seed, made in (restored or {}).items()},
        "command": command,
        "sizes": dict(runs[0].sizes),
        "gold_standard": GOLD,
        "references": _references(runs),
        "ulira": _ulira(ulira),
        "floor": _floor(runs),
        "methods": methods,
        "comparisons": comparisons(methods),
        "white_box_comparisons": white_box_comparisons(methods),
        "config": config_dict(config),
    }
    payload["roc"] = _roc_curves(runs[0])
    (out / "bench.json").write_text(json.dumps(payload, indent=2))
    (out / "config.json").write_text(json.dumps(payload["config"], indent=2))
    (out / "bench.md").write_text(bench_page(payload, sections))
    draw_plots(payload, out)
    return payload


def bench_page(payload: Mapping[str, Any], sections: Sequence[str] = ()) -> str:
    """bench.md: the tables of ``payload`` (bench.json), then ``sections`` (markdown) appended."""
    return "\n".join([_markdown(payload), *sections])


def draw_plots(payload: Mapping[str, Any], out: Path) -> None:
    """metrics.png and roc.png from bench.json's payload alone; roc.png only where the payload keeps the
    curves (a bench.json written before it did keeps the roc.png its run drew)."""
    _plot_metrics(payload["methods"], out / "metrics.png")
    if "roc" in payload:
        _plot_roc(payload["roc"], out / "roc.png")
