"""Assemble ``docs/results.md`` from the result JSON under ``docs/``: ``python -m fedunlearn.simulations.results_docs``.

It only assembles. Every figure on the page is read from a JSON file when the page is made: the seed
sweeps and the gate's power (``docs/federation/*/sweep.json``, ``docs/audit/power.json``), the single
runs (``docs/federation/*/report.json``) and scaling, the edge benchmarks (``docs/edge/*/edge.json`` and
the idle-machine latency files beside them), the centralised benchmark (``docs/bench/*/bench.json``),
CLI startup and the request service under load. Each table names the commit its JSON records ("not
recorded" where the JSON predates recording one) and links the page that holds every figure.
It also rewrites the results block of the README beside ``docs/`` (``results_summary``) and draws every
bench, tuning and matrix page and plot again from its JSON (``results_render``). ``--check`` exits 1
when a page on disk differs from what the JSON gives; a test does the same (plots are drawn, not compared).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedunlearn.simulations.markdown import table
from fedunlearn.simulations.results_bench import bench_sections
from fedunlearn.simulations.results_format import commit_cell, link, num, span
from fedunlearn.simulations.results_render import draw_bench_plots, legacy_benches, result_pages
from fedunlearn.simulations.results_summary import load_json, readme_with_summary

__all__ = ["PAGE", "main", "render"]

PAGE = "results.md"
COMMAND = "python -m fedunlearn.simulations.results_docs"
# the three models every edge table shows, by the names a bench and a run's export give them
_BENCH_NAMES = {"original": "original", "retrain": "retrain", "remi": "unlearned"}
_RUN_NAMES = {"original": "original", "federated_retrain": "retrain", "unlearned": "unlearned"}
_SHOWN = ("original", "retrain", "unlearned")


def _optional(root: Path, relative: str, section: Callable[[Mapping[str, Any]], list[str]]) -> list[str]:
    """``section`` of one JSON file that a docs folder may lack: nothing when it is absent."""
    path = root / relative
    return section(load_json(path)) if path.exists() else []


# ---------------------------------------------------------------- federation


def _sweeps(root: Path) -> list[str]:
    paths = sorted((root / "federation").glob("*/sweep.json"))
    rows = []
    for path in paths:
        sweep = load_json(path)
        c, seeds = sweep["counts"], sweep["seeds"]
        rows.append([link(root, path.with_suffix(".md"), sweep["scenario"]), c["of"],
                     f"{c['original_failed']}/{c['of']}", f"{c['retrain_passed']}/{c['of']}",
                     f"{c['unlearned_passed']}/{c['of']}", span(s["time_ratio"] for s in seeds),
                     span(s["bytes_ratio"] for s in seeds), commit_cell(sweep)])
    return ["### Seed sweeps", "",
            "One run per seed; the gate's verdicts on the unlearned model and on its two controls. Time and bytes "
            "are the unlearning phase's (failed attempts included) as a share of federated retrain's.", "",
            *table(["scenario", "seeds", "original failed", "retrain passed", "unlearned passed",
                     "time / retrain", "bytes / retrain", "commit"], rows), ""]


def _power(result: Mapping[str, Any]) -> list[str]:
    config = result["config"]
    rows = [[size, num(r["original"]["loss"], 2), num(r["original"]["reference"], 2),
             num(r["never_trained"]["loss"], 2), num(r["never_trained"]["reference"], 2)]
            for size, r in result["power"].items()]
    return ["### Gate power", "",
            f"Share of audits in which the gate fails a model, {config['dataset']} / {config['model']}, "
            f"{config['draws']} draws per forget-set size against {config['nonmembers']} non-members, the gate's "
            f"false-alarm rate split over {config['looks']} looks; commit {commit_cell(result)}. Details and the "
            "reference designs: "
            "[audit/power.md](audit/power.md).", "",
            *table(["forget-set size", "original, loss", "original, LiRA + RMIA", "never trained on them, loss",
                     "never trained on them, LiRA + RMIA"], rows), ""]


def _controls(controls: Mapping[str, Any] | None) -> str:
    if not controls:
        return "none"
    verdict = {True: "pass", False: "FAIL", None: "-"}
    return (f"original {verdict[(controls.get('original') or {}).get('passed')]}, "
            f"retrain {verdict[(controls.get('federated_retrain') or {}).get('passed')]}")


def _run_row(root: Path, path: Path, report: Mapping[str, Any]) -> list[object]:
    """One single run's row; a run whose last phase pooled no audit has no gate to quote."""
    unlearning, base = report["unlearning"], report["baselines"]
    gate = unlearning["gate"] or {}
    original, retrain = base["original"], base["federated_retrain"] or {}
    judged = gate and original.get("forget_auc") is not None
    within = abs(original["forget_auc"] - 0.5) <= gate["tolerance"] if judged else None
    return [link(root, path.with_suffix(".md")), report["clients"], f"{report['model']} / {report['dataset']}",
            "no audit pooled" if not gate else "pass" if gate["passed"] else "FAIL",
            gate.get("attack", gate.get("worst_attack", "-")), num(gate.get("tolerance")),
            f"{num(unlearning['forget_auc'])} / {num(original.get('forget_auc'))} / "
            f"{num(retrain.get('forget_auc'))}",
            {True: "yes", False: "no", None: "-"}[within],
            f"{num(unlearning['ta'], 2)} / {num(retrain.get('ta'), 2)}",
            _controls(report.get("controls")), commit_cell(report)]


def _runs(root: Path) -> list[str]:
    reports = [(p, load_json(p)) for p in sorted((root / "federation").glob("*/report.json"))]
    rows = [_run_row(root, p, r) for p, r in reports if r.get("unlearning")]
    return ["### Single runs", "",
            "One run per scenario. \"Original within tolerance\": whether the do-nothing model's forget AUC "
            "(the gate's deciding attack) lies within the tolerance of 0.5 that the run's gate applied. Runs "
            "without controls predate the gate's verdicts on the original and retrain; they show that the machinery "
            "runs, not that anything was forgotten. \"No audit pooled\": no requester could audit its forget set "
            "(for a class request, a node holding no sealed samples of the class), so those requests stay pending.", "",
            *table(["run", "clients", "model / data", "gate", "gate's deciding attack", "tolerance",
                     "forget AUC unlearned / original / retrain", "original within tolerance",
                     "ta unlearned / retrain", "controls", "commit"], rows), ""]


def _scaling(result: Mapping[str, Any]) -> list[str]:
    rows = [[p["clients"], p["rounds"], num(p["wall_seconds"], 1), num(p["peak_rss_mb"], 0),
             num(p["training_seconds"], 1), num(p["unlearning_seconds"], 1), p["status"]]
            for p in result["points"]]
    return ["### Scaling", "",
            f"`fedunlearn scale {result['scenario']}`: wall time and peak memory of the whole process tree; commit "
            f"{commit_cell(result)}. [federation/scaling/scaling.md](federation/scaling/scaling.md).", "",
            *table(["clients", "rounds", "wall s", "peak RSS MB", "training s", "unlearning s", "status"], rows),
            ""]


# ---------------------------------------------------------------- edge


@dataclass(frozen=True)
class _Export:
    """One source of edge figures: a bench's three models (mean over seeds) or a run's clients' audit."""

    label: str
    link: str
    commit: str
    metrics: Mapping[str, Sequence[float]]  # edge.json metric name -> one value per model
    leakage: Mapping[str, tuple[float, float, float]]  # _SHOWN model -> forget AUC as torch, fp32, int8 ONNX


def _bench_export(root: Path, path: Path) -> _Export:
    edge = load_json(path)
    models = [edge["models"][m] for m in _BENCH_NAMES if m in edge["models"]]
    names = ("fp32_max_abs_diff", "int8_top1_agreement", "int8_ta_drop", "mia_auc_int8_gap", "fp32_bytes",
             "int8_bytes")
    seeds = len(edge["seeds"])
    return _Export(
        label=f"{edge['model']} / {edge['dataset']} (bench, {seeds} seed{'s' if seeds > 1 else ''})",
        link=link(root, path.with_suffix(".md")), commit=commit_cell(edge),
        metrics={name: [m[name] for m in models] for name in names},
        leakage={_BENCH_NAMES[m]: (e["mia_auc_torch"], e["mia_auc_fp32"], e["mia_auc_int8"])
                 for m, e in edge["models"].items() if m in _BENCH_NAMES})


def _run_export(root: Path, path: Path) -> _Export | None:
    report = load_json(path)
    export = report.get("export")
    if not export or export.get("parity_max_abs_diff") is None:
        return None
    sizes = {a["precision"].split("-")[0]: a["bytes"] for a in export["artifacts"] if a["model"] == export["model"]}
    leakage = {_RUN_NAMES[m]: (v["torch"], v["fp32"], v["int8"])
               for m, v in (export.get("leakage") or {}).items() if m in _RUN_NAMES}
    gaps = [abs(int8 - fp32) for _, fp32, int8 in leakage.values()]
    audited = any(a.get("gate_passed") is not None for a in export["artifacts"])
    how = "clients' audit" if audited else f"{export['model']} model, not audited"
    return _Export(
        label=f"{report['model']} / {report['dataset']} ({report['scenario']} export, {how})",
        link=link(root, path.with_suffix(".md")), commit=commit_cell(report),
        metrics={"fp32_max_abs_diff": [export["parity_max_abs_diff"]],
                 "int8_top1_agreement": [export["int8_top1_agreement"]],
                 "int8_ta_drop": [export["fp32_ta"] - export["int8_ta"]], "mia_auc_int8_gap": gaps,
                 "fp32_bytes": [sizes["fp32"]], "int8_bytes": [sizes["int8"]]},
        leakage=leakage)


def _exports(root: Path) -> list[_Export]:
    bench = [_bench_export(root, p) for p in sorted((root / "edge").glob("*/edge.json"))]
    runs = [_run_export(root, p) for p in sorted((root / "federation").glob("*/report.json"))]
    return bench + [r for r in runs if r is not None]


def _kib(values: Sequence[float]) -> str:
    return span([v / 1024 for v in values], 0)


def _parity(exports: Sequence[_Export]) -> list[str]:
    rows = [[e.label, span(e.metrics["fp32_max_abs_diff"], 1, "e"),
             span([100 * v for v in e.metrics["int8_top1_agreement"]]) + "%", span(e.metrics["int8_ta_drop"]),
             f"{_kib(e.metrics['fp32_bytes'])} / {_kib(e.metrics['int8_bytes'])}", e.link, e.commit]
            for e in exports]
    return ["### Parity and quantization", "",
            "A bench row ranges over its original, retrain and unlearned models, a run row is the model its run "
            "exported; agreement and accuracy on the test split.", "",
            *table(["model / data (source)", "fp32 max \\|logit diff\\|", "int8 top-1 agreement",
                     "int8 ta drop (points)", "fp32 / int8 KiB", "details", "commit"], rows), ""]


def _leakage(exports: Sequence[_Export]) -> list[str]:
    def cell(e: _Export, model: str) -> str:
        return " / ".join(num(v) for v in e.leakage[model]) if model in e.leakage else "-"

    rows = [[e.label, *(cell(e, m) for m in _SHOWN), num(max(e.metrics["mia_auc_int8_gap"]))]
            for e in exports if e.leakage]
    return ["### Does quantization change leakage?", "",
            "Forget-set AUC (loss attack) as torch / fp32 ONNX / int8 ONNX.", "",
            *table(["model / data (source)", "original", "retrain", "unlearned", "largest \\|int8 - fp32\\|"],
                    rows), ""]


def _latency_rows(root: Path) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((root / "edge").glob("*/*/bench-edge-quiet.json")):
        edge = load_json(path.parent.parent / "edge.json")
        found.append((f"{edge['model']} / {edge['dataset']} (bench export {path.parent.name})", load_json(path)))
    return found


def _latency(rows: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    if not rows:
        return []
    first = rows[0][1]

    def ms(result: Mapping[str, Any], engine: str, batch: str) -> str:
        return num(result["engines"][engine][batch]["median_ms"])

    timings = [[label, *(ms(r, e, b) for b in ("b1", "b32") for e in ("torch", "ort_fp32", "ort_int8")),
              num(r["ratios"]["ort_fp32_vs_torch_b1"], 2), num(r["ratios"]["int8_vs_fp32_b1"], 2), commit_cell(r)]
             for label, r in rows]
    return ["### Latency", "",
            f"Median ms over {first['repeats']} calls after {first['warmup']} warm-up, one thread per engine, "
            f"{first['cpu']['model']} ({first['cpu']['logical_cores']} cores), idle machine "
            f"(`fedunlearn edge latency --repeats {first['repeats']}`).", "",
            *table(["model / data (export)", "torch b1", "ORT fp32 b1", "ORT int8 b1", "torch b32", "ORT fp32 b32",
                     "ORT int8 b32", "fp32 / torch b1", "int8 / fp32 b1", "commit"], timings), ""]


def _targets(root: Path, exports: Sequence[_Export], latency: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    paths = sorted((root / "edge").glob("*/edge.json"))
    if not paths:
        return []
    values: dict[str, list[tuple[float, str]]] = {}
    for e in exports:
        for name, figures in e.metrics.items():
            values.setdefault(name, []).extend((v, e.label) for v in figures)
    for label, result in latency:
        for name, ratio in result["ratios"].items():
            values.setdefault(name, []).append((ratio, label))
    rows = []
    for name, target in load_json(paths[0])["targets"].items():
        worst: Callable[..., tuple[float, str]] = max if target["op"] == "<=" else min
        value, where = worst(values.get(name, [(float("nan"), "-")]))
        met = value <= target["value"] if target["op"] == "<=" else value >= target["value"]
        rows.append([f"`{name}` {target['op']} {target['value']:g}", f"{value:.3g}", where, "yes" if met else "**no**"])
    return ["### Against the edge targets", "",
            "The targets recorded in edge.json; the worst figure over every table above (latency ratios from the "
            "idle-machine runs).", "", *table(["target", "worst", "where", "met"], rows), ""]


# ---------------------------------------------------------------- CLI and service


def _startup(result: Mapping[str, Any]) -> list[str]:
    goal = result["goal"]
    rows = [[f"`{name}`", num(c["median_seconds"], 2), num(c["median_peak_rss_mib"], 0), c["loads"]]
            for name, c in result["commands"].items()]
    return ["## CLI startup", "",
            f"Median of {result['runs']} fresh processes, {result['cpus']} CPUs at load average "
            f"{result['load_average']:.2f}; goal under {goal['seconds']:g} s and {goal['peak_rss_mib']:g} MiB; "
            f"commit {commit_cell(result)}. [cli/startup.md](cli/startup.md).", "",
            *table(["command", "wall s", "peak MiB", "loads"], rows), ""]


def _load_bench(result: Mapping[str, Any]) -> list[str]:
    rows = [[p["phase"], p["callers"], "yes" if p["training"] else "no",
             num(p["latency_ms"]["submit"]["p50_ms"], 1), num(p["latency_ms"]["submit"]["p99_ms"], 1),
             f"{p['acknowledged']} of {p['attempts']}", num(p["acknowledged_per_s"], 1)]
            for p in result["phases"]]
    checks = result["checks"]["ledger"]
    return ["## Forget-request service under load", "",
            f"One node, {result['parameters']['train_samples']} training samples, "
            f"{result['machine']['cpus']} CPUs; commit {commit_cell(result)}. Every acknowledged request found "
            f"afterwards: {checks['present']} of {checks['acknowledged']}; overall "
            f"{'passed' if result['passed'] else 'FAILED'}. [security/load.md](security/load.md).", "",
            *table(["phase", "callers", "training alongside", "Submit p50 ms", "Submit p99 ms", "acknowledged",
                     "acknowledged / s"], rows), ""]


# ---------------------------------------------------------------- page


def render(root: Path) -> str:
    """The whole page from the JSON under ``root`` (the ``docs/`` folder); links are relative to it."""
    exports, latency = _exports(root), _latency_rows(root)
    lines = ["# Results", "",
             f"Generated by `{COMMAND}` from the JSON files under `docs/`: do not edit by hand (a test fails when "
             "this page and its JSON disagree). Each table names the commit its JSON records, or \"not recorded\" "
             "where the JSON predates recording one; the linked pages hold every figure and the command that made "
             "it. What the gate checks: [audit.md](audit.md).", "",
             "## Federated unlearning under the leakage gate", "",
             *_sweeps(root), *_optional(root, "audit/power.json", _power), *_runs(root),
             *_optional(root, "federation/scaling/scaling.json", _scaling),
             "## Edge", "",
             "Exports of the centralised bench (`fedunlearn bench --edge`) and of federated runs (the requesting "
             "clients audited every artifact with ONNX Runtime). How they were made: "
             "[edge.md](edge.md#the-published-measurements).", "",
             *_parity(exports), *_leakage(exports), *_latency(latency), *_targets(root, exports, latency),
             *bench_sections(root), *_optional(root, "cli/startup.json", _startup),
             *_optional(root, "security/load.json", _load_bench)]
    return "\n".join(lines).rstrip("\n") + "\n"


def _update(pages: Mapping[Path, str], *, check: bool) -> list[Path]:
    """The pages whose file differs from their text; rewritten unless ``check``."""
    stale = [page for page, text in pages.items() if (page.read_text() if page.exists() else "") != text]
    if not check:
        for page in stale:
            page.write_text(pages[page])
            print(f"wrote {page}")
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write docs/results.md, the README's results block and every "
                                                 "bench, tuning and matrix page and plot, from the result JSON "
                                                 "under docs/.")
    parser.add_argument("--docs", type=Path, default=Path("docs"), help="the docs folder (default: docs)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page is out of date")
    args = parser.parse_args(argv)
    readme = args.docs.parent / "README.md"  # the repository's front page; a docs folder elsewhere may have none
    # the bench, tuning and matrix pages first: results.md links a page only where it exists
    stale = _update(result_pages(args.docs), check=args.check)
    pages = {args.docs / PAGE: render(args.docs)}
    if readme.exists():
        pages[readme] = readme_with_summary(readme.read_text(), args.docs)
    stale += _update(pages, check=args.check)
    if args.check:
        for page in stale:
            print(f"{page} is out of date: run `{COMMAND}`", file=sys.stderr)
        return 1 if stale else 0
    print(f"drew the plots of {draw_bench_plots(args.docs)} bench folders")
    for path in legacy_benches(args.docs):
        print(f"left as written: {path} predates benches recording their commit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
