"""Turn benchmark seed runs into ``bench.json``, ``bench.md`` and plots.

Metrics are means over seeds with ``<metric>_std`` beside them, under the
DESIGN metric names, so tables from different runs line up.
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

from common.audit.report import GAP_METRICS
from simulations.bench import GOLD, BenchConfig, SeedRun

__all__ = ["METRICS", "mean_std", "summarize", "write_report"]

METRICS = (*GAP_METRICS, "mia_auc", "tpr_at_1pct_fpr", "tpr_at_01pct_fpr", "seconds", "avg_gap")


def _method_values(run: SeedRun, method: str) -> dict[str, float]:
    method_run = run.runs[method]
    values = {k: float(v) for k, v in method_run.report.to_dict().items() if k in METRICS}
    values["seconds"] = method_run.seconds
    values["avg_gap"] = run.gap(method)
    return values


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


def summarize(runs: Sequence[SeedRun]) -> dict[str, dict[str, Any]]:
    """methods.<name> -> {metric: mean, metric_std: std, ...} over seeds."""
    summary: dict[str, dict[str, Any]] = {}
    for method in runs[0].runs:
        entry: dict[str, Any] = mean_std([_method_values(run, method) for run in runs], METRICS)
        entry["attacks"] = {a.name: round(a.auc, 4) for a in runs[0].runs[method].report.attacks}
        result = runs[0].runs[method].result
        if result is not None:
            entry["stop_reason"] = result.stop_reason
            entry["steps"] = result.steps
            entry["params"] = dict(result.params)
        summary[method] = entry
    return summary


def _config_dict(config: BenchConfig) -> dict[str, Any]:
    resolved = asdict(config)
    resolved["methods"] = list(config.all_methods)
    resolved["data_root"] = str(config.data_root) if config.data_root else None
    resolved["method_params"] = {k: dict(v) for k, v in config.method_params.items()}
    return resolved


def _markdown(payload: dict[str, Any]) -> str:
    header = ["method", *METRICS]
    lines = [
        f"# fedunlearn bench: {payload['dataset']} / {payload['model']} / forget {payload['forget']}",
        "",
        f"seeds: {len(payload['seeds'])}, device: {payload['device']}, sizes: {payload['sizes']}",
        "",
        "Percentages 0-100, AUC 0-1, mean ± std over seeds; `avg_gap` is the mean |x - retrain| "
        "over ua, ra, ta, mia_efficacy (lower is better).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for method, entry in payload["methods"].items():
        cells = [f"{entry[m]:.3f} ± {entry[m + '_std']:.3f}" if "auc" in m else
                 f"{entry[m]:.2f} ± {entry[m + '_std']:.2f}" for m in METRICS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot_roc(run: SeedRun, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    for method, method_run in run.runs.items():
        fpr, tpr = method_run.report.roc
        label = f"{method} ({method_run.report.mia_auc:.3f})"
        ax.plot(np.maximum(fpr, 1e-4), np.maximum(tpr, 1e-4), label=label)
    ax.plot([1e-4, 1], [1e-4, 1], "k:", linewidth=0.8)
    ax.set(xscale="log", yscale="log", xlabel="false positive rate", ylabel="true positive rate",
           title="loss attack on the forget set (seed 0)")
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
                 sections: Sequence[str] = ()) -> dict[str, Any]:
    """Write bench.json, bench.md (``sections``, markdown, appended), roc.png, metrics.png and config.json."""
    out.mkdir(parents=True, exist_ok=True)
    methods = summarize(runs)
    payload = {
        "dataset": config.dataset,
        "model": config.model,
        "forget": config.forget,
        "seeds": [run.seed for run in runs],
        "device": device,
        "sizes": dict(runs[0].sizes),
        "gold_standard": GOLD,
        "methods": methods,
        "config": _config_dict(config),
    }
    (out / "bench.json").write_text(json.dumps(payload, indent=2))
    (out / "bench.md").write_text("\n".join([_markdown(payload), *sections]))
    (out / "config.json").write_text(json.dumps(payload["config"], indent=2))
    _plot_roc(runs[0], out / "roc.png")
    _plot_metrics(methods, out / "metrics.png")
    return payload
