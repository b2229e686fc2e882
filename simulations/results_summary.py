"""The README's results in a few sentences, made from the same JSON as ``docs/results.md``.

The README sits between markers that ``results_docs`` rewrites, so a figure on the front page can not
drift from its JSON: the sweeps' verdicts and costs against their goals, which single runs claim
nothing (their original passes the gate too), the strongest per-example attack and U-LiRA of each
centralised bench, and the request service under load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedunlearn.common.errors import DataError
from fedunlearn.simulations.results_format import bench_label

__all__ = ["BEGIN", "END", "headline", "load_json", "readme_with_summary", "summary"]

BEGIN = "<!-- results: made by `python -m fedunlearn.simulations.results_docs` from docs/**/*.json; do not edit -->"
END = "<!-- /results -->"
_GOAL_PASSED, _GOAL_COST = 0.8, 0.1  # the unlearned model passes in 4 of 5 seeds, at a tenth of retrain's cost
_BENCHMARK_COST = 0.05  # the benchmark issue asks fashion-mnist-memorise's phase for a twentieth


def load_json(path: Path) -> dict[str, Any]:
    """A result file as the dict it holds."""
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def headline(sweep: Mapping[str, Any]) -> str:
    """The sweep's verdicts in one sentence."""
    c = sweep["counts"]
    return (f"over {c['of']} seeds the gate failed the do-nothing original {c['original_failed']}/{c['of']}, "
            f"passed federated retrain {c['retrain_passed']}/{c['of']} and passed the unlearned model "
            f"{c['unlearned_passed']}/{c['of']}")


def _range(values: list[float | None]) -> tuple[float, float] | None:
    present = sorted(v for v in values if v is not None)
    return (present[0], present[-1]) if present else None


def _span(low_high: tuple[float, float]) -> str:
    """"0.06-0.12", or one figure where both ends print alike."""
    low, high = (f"{v:.2f}" for v in low_high)
    return low if low == high else f"{low}-{high}"


def _sweep(root: Path, path: Path) -> str:
    sweep = load_json(path)
    c, seeds = sweep["counts"], sweep["seeds"]
    time, bytes_ = _range([s["time_ratio"] for s in seeds]), _range([s["bytes_ratio"] for s in seeds])
    cost = ("" if time is None or bytes_ is None else
            f"; the unlearning phase took {_span(time)} of federated retrain's time and {_span(bytes_)} of its bytes")
    cheap, cheaper = (sum(_cheap_pass(s, share) for s in seeds) for share in (_GOAL_COST, _BENCHMARK_COST))
    met = cheap >= _GOAL_PASSED * c["of"]
    link = path.with_suffix(".md").relative_to(root.parent).as_posix()
    return (f"- `{sweep['scenario']}`: {headline(sweep)}{cost} ([sweep]({link})). Goal (the unlearned model "
            f"passes in 4 of 5 at a tenth of retrain's cost or less): {'met' if met else 'not met'}, "
            f"{cheap} of {c['of']} seeds passed at a tenth or less, {cheaper} at a twentieth or less.")


def _cheap_pass(seed: Mapping[str, Any], share: float) -> bool:
    """The unlearned model passed, at no more than ``share`` of retrain's time and of its bytes."""
    ratios = (seed.get("time_ratio"), seed.get("bytes_ratio"))
    return bool(seed.get("unlearned_passed")) and all(r is not None and r <= share for r in ratios)


def _verdict(gate: Mapping[str, Any]) -> str:
    return "passed" if gate.get("passed") else "failed: " + "; ".join(gate.get("reasons") or ["no reason given"])


def _runs(root: Path) -> list[str]:
    silent, unaudited, controlled = [], [], []
    for path in sorted((root / "federation").glob("*/report.json")):
        report = load_json(path)
        if not report.get("unlearning"):
            continue
        name, gate = f"`{path.parent.name}`", report["unlearning"].get("gate")
        controls = {k: (v or {}).get("passed") for k, v in (report.get("controls") or {}).items()
                    if k in ("original", "federated_retrain")}
        if not gate:
            unaudited.append(name)
        elif controls.get("original"):
            silent.append(name)
        elif controls == {"original": False, "federated_retrain": True}:
            controlled.append(f"{name} (the unlearned model {_verdict(gate)})")
    lines = []
    if controlled:
        lines.append(f"- Single runs where the gate failed the do-nothing original and passed federated retrain: "
                     f"{', '.join(controlled)}.")
    if silent:
        lines.append(f"- Single runs where the do-nothing original passes the same gate, so they claim nothing "
                     f"about forgetting: {', '.join(silent)}.")
    if unaudited:
        lines.append(f"- Single runs where no requester could audit its forget set, so its requests stay pending: "
                     f"{', '.join(unaudited)}.")
    return lines


def _tpr(method: Mapping[str, Any], attack: str) -> float:
    return float(method["attacks"][attack]["tpr_at_1pct_fpr"])


def _bench(root: Path, path: Path) -> str | None:
    """One bench's per-example finding, where it ran the reference-model attacks."""
    bench = load_json(path)
    methods, gold = bench["methods"], bench["gold_standard"]
    strong = [a for a in ("lira", "rmia") if isinstance(methods["original"].get("attacks", {}).get(a), dict)]
    if not strong:
        return None
    best = max(strong, key=lambda a: _tpr(methods["original"], a))
    seeds = len(bench["seeds"])
    link = path.with_suffix(".md").relative_to(root.parent).as_posix()
    tuned = (bench.get("config") or {}).get("tuned")
    tuning = f", methods as tuned in `{Path(tuned).parent.name}`" if tuned else ""
    text = (f"- {bench_label(bench)}, {bench['sizes']['train']:,} training "
            f"images, {seeds} seed{'s' if seeds > 1 else ''}{tuning} ([bench]({link})): "
            f"at 1% FPR {best} flags {_tpr(methods['original'], best):.1f}% of the original's forget set (the "
            f"loss attack {_tpr(methods['original'], 'loss'):.1f}%), {_tpr(methods[gold], best):.1f}% of "
            f"retrain's and {_tpr(methods['remi'], best):.1f}% of ReMI's.{_gap_comparison(bench)}")
    if not (methods["remi"].get("ulira") or {}).get("accuracy"):
        return text
    inexact = {m: e["ulira"]["accuracy"] for m, e in methods.items()
               if m not in ("remi", "original", gold) and "variant_of" not in e and e.get("ulira")}
    closest = min(inexact, key=inexact.__getitem__, default=None)  # a bench of ReMI and its variants has none
    other = "" if closest is None else f", the best other inexact method ({closest}) {inexact[closest]:.3f}"
    named = [f"{m} {e['ulira']['accuracy']:.3f}" for m, e in methods.items() if "variant_of" in e and e.get("ulira")]
    variants = f" (its variants: {', '.join(named)})" if named else ""
    accuracy = {m: methods[m]["ulira"]["accuracy"] for m in ("remi", "original", gold)}
    return (f"{text} U-LiRA accuracy (0.5: its outputs cannot be told from retraining's): ReMI "
            f"{accuracy['remi']:.3f}{variants}{other}, the original {accuracy['original']:.3f}, two retrainings "
            f"{accuracy[gold]:.3f}.")


def _gap_comparison(bench: Mapping[str, Any]) -> str:
    """ReMI's avg_gap against the closest other inexact method's, with their paired interval, where the
    bench has one: the README claims a difference only where the interval excludes 0."""
    methods, gold, comparisons = bench["methods"], bench["gold_standard"], bench.get("comparisons") or {}
    inexact = {m: e["avg_gap"] for m, e in methods.items()
               if m not in ("remi", "original", gold) and "variant_of" not in e and m in comparisons}
    if not inexact or comparisons[min(inexact, key=inexact.__getitem__)]["avg_gap"]["ci_low"] is None:
        return ""
    closest = min(inexact, key=inexact.__getitem__)
    paired = comparisons[closest]["avg_gap"]
    verdict = "the seeds show a difference" if paired["excludes_zero"] else "the seeds show no difference"
    floor = bench.get("floor") or {}
    below = f"; two retrainings differ by {floor['avg_gap']['mean']:.2f}" if floor.get("avg_gap") else ""
    return (f" avg_gap: ReMI {methods['remi']['avg_gap']:.2f}, {closest} {inexact[closest]:.2f} (paired difference "
            f"{paired['mean_difference']:+.2f}, 95% CI [{paired['ci_low']:+.2f}, {paired['ci_high']:+.2f}]: "
            f"{verdict}){below}.")


def _load(root: Path) -> list[str]:
    path = root / "security" / "load.json"
    if not path.exists():
        return []
    result = load_json(path)
    ledger, phases = result["checks"]["ledger"], result["phases"]
    latency = "; ".join(f"{p['phase']} ({p['callers']} caller{'s' if p['callers'] > 1 else ''}"
                        f"{', training alongside' if p['training'] else ''}) "
                        f"{p['latency_ms']['submit']['p50_ms']:.1f}/{p['latency_ms']['submit']['p99_ms']:.1f} ms"
                        for p in phases)
    return [f"- One node's forget-request service, {result['parameters']['train_samples']:,} samples "
            f"([load]({(root / 'security' / 'load.md').relative_to(root.parent).as_posix()})): "
            f"{ledger['present']} of {ledger['acknowledged']} acknowledged requests were in its ledger afterwards, "
            f"{ledger['duplicates']} twice; Submit p50/p99 {latency}."]


def summary(root: Path) -> list[str]:
    """The README's results block (between BEGIN and END) from the JSON under ``root`` (``docs/``)."""
    benches = [_bench(root, p) for p in sorted((root / "bench").glob("*/bench.json"))]
    return [BEGIN,
            *(_sweep(root, p) for p in sorted((root / "federation").glob("*/sweep.json"))),
            *_runs(root), *(b for b in benches if b is not None), *_load(root),
            END]


def readme_with_summary(readme: str, root: Path) -> str:
    """``readme`` with the text between its markers replaced by ``summary(root)``."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise DataError(f"the README lacks the results markers {BEGIN!r} ... {END!r}")
    return readme[:start] + "\n".join(summary(root)) + readme[end + len(END):]
