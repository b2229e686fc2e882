"""The centralised benchmark's sections of ``docs/results.md``, from ``docs/bench/*/bench.json``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedunlearn.simulations.bench_compare import DEEP_AGAINST_REFERENCE, white_box_comparisons
from fedunlearn.simulations.bench_whitebox import powerless
from fedunlearn.simulations.markdown import table
from fedunlearn.simulations.results_format import bench_label, commit_cell, link, num
from fedunlearn.simulations.results_summary import load_json

__all__ = ["bench_sections"]


def _bench_row(root: Path, path: Path, bench: Mapping[str, Any]) -> list[object]:
    methods = bench["methods"]
    remi, retrain, original = methods["remi"], methods[bench["gold_standard"]], methods["original"]
    others = {m: e["avg_gap"] for m, e in methods.items()
              if m not in ("remi", "original", bench["gold_standard"]) and "variant_of" not in e}  # methods only
    best = min(others, key=others.__getitem__) if others else None  # a bench of retrain and remi alone has none
    sizes = bench["sizes"]
    return [link(root, path.with_suffix(".md"), bench_label(bench)),
            f"{sizes['forget']} of {sizes['train']}", len(bench["seeds"]), num(remi["avg_gap"], 2),
            "-" if best is None else f"{best} {num(others[best], 2)}", num(original["avg_gap"], 2),
            num(abs(remi["mia_auc"] - retrain["mia_auc"])), num(remi["seconds"] / retrain["seconds"]),
            f"{remi['ta'] - original['ta']:+.2f}", _stop_reasons(remi), commit_cell(bench)]


def _stop_reasons(method: Mapping[str, Any]) -> str:
    """Why the method stopped: each seed's reason, with how many seeds gave it (older files kept one reason)."""
    if "stop_reason" in method:
        return str(method["stop_reason"])
    reasons = Counter(str(seed["stop_reason"]) for seed in method.get("per_seed", []) if seed.get("stop_reason"))
    if sum(reasons.values()) == 1:  # one seed: its reason alone
        return next(iter(reasons))
    return ", ".join(f"{reason} ({count})" for reason, count in reasons.items()) or "-"


def bench_sections(root: Path) -> list[str]:
    benches = [(p, load_json(p)) for p in sorted((root / "bench").glob("*/bench.json"))]
    if not benches:
        return []
    summary = [_bench_row(root, p, b) for p, b in benches]
    methods = list(dict.fromkeys(m for _, b in benches for m in b["methods"]))
    gaps = [[m, *(num(b["methods"][m]["avg_gap"], 2) if m in b["methods"] else "-" for _, b in benches)]
            for m in methods]
    return ["## Centralised benchmark", "",
            "`fedunlearn bench`, mean over seeds. `avg_gap` is the mean \\|x - retrain\\| over ua, ra, ta and "
            "mia_efficacy (lower is better); the full tables, with standard deviations, are on each linked page. "
            "How these runs were made: [method.md](method.md#the-published-benchmark).", "",
            *table(["bench", "forget / train", "seeds", "remi avg_gap", "best other", "original avg_gap",
                     "\\|remi mia_auc - retrain's\\|", "remi s / retrain s", "remi ta - original's", "remi stopped",
                     "commit"], summary), "",
            "`avg_gap` of every method:", "",
            *table(["method", *(p.parent.name for p, _ in benches)], gaps), "",
            *(line for path, bench in benches for line in _strong_audits(root, path, bench)),
            *(line for path, bench in benches for line in _paired(root, path, bench)),
            *(line for path, bench in benches for line in _white_box(root, path, bench)),
            *_tunings(root), *_matrix(root)]


def _strong_audits(root: Path, path: Path, bench: Mapping[str, Any]) -> list[str]:
    """A bench's per-example attacks and U-LiRA, where it ran them (older benches did not)."""
    methods = bench["methods"]
    ran = {a for m in methods.values() for a, figures in m.get("attacks", {}).items() if isinstance(figures, dict)}
    attacks = [a for a in ("lira", "rmia", "loss") if a in ran]  # the strong ones and the population baseline
    if not attacks:
        return []
    shadows = {m["ulira"]["shadows"] for m in methods.values() if m.get("ulira")}
    rows = [[name, *(num(m.get("attacks", {}).get(a, {}).get("tpr_at_1pct_fpr"), 2) for a in attacks),
             num((m.get("ulira") or {}).get("accuracy")), num((m.get("ulira") or {}).get("accuracy_std"))]
            for name, m in methods.items()]
    page = link(root, path.with_suffix(".md"), f"{bench['dataset']} `{bench['forget']}`")
    references = bench.get("references", {}).get("models", "-")
    seeds = len(bench["seeds"])
    return [f"Per-example attacks and U-LiRA on {page} ({seeds} seed{'s' if seeds > 1 else ''}, {references} reference "
            "models, "
            + (f"U-LiRA over {', '.join(map(str, sorted(shadows)))} shadow splits; U-LiRA accuracy 0.5: the "
               "method's outputs on the forget samples cannot be told from retraining's; retrain's own row is the "
               "floor two independent retrainings reach):" if shadows else "no U-LiRA):"), "",
            *table(["method", *(f"{a} TPR % at 1% FPR" for a in attacks), "U-LiRA accuracy", "± std over seeds"],
                    rows), ""]


def _interval(figures: Mapping[str, Any] | None) -> str:
    if figures is None:
        return "-"
    if figures["ci_low"] is None:
        return f"{figures['mean_difference']:+.3f} (one seed)"
    mark = " *" if figures["excludes_zero"] else ""
    return f"{figures['mean_difference']:+.3f} [{figures['ci_low']:+.3f}, {figures['ci_high']:+.3f}]{mark}"


def _paired(root: Path, path: Path, bench: Mapping[str, Any]) -> list[str]:
    """Every method's paired difference to ReMI, where a bench has more than one seed."""
    comparisons = bench.get("comparisons") or {}
    if len(bench["seeds"]) < 2 or not comparisons:
        return []
    rows = [[name, _interval(row.get("avg_gap")), _interval(row.get("ulira_accuracy"))]
            for name, row in comparisons.items()]
    page = link(root, path.with_suffix(".md"), f"{bench['dataset']} `{bench['forget']}`")
    return [f"Method − remi on {page}, per seed on the same original, mean and 95% paired t interval over "
            f"{len(bench['seeds'])} seeds (`*`: the interval excludes 0; positive: remi's figure is the lower):", "",
            *table(["method", "avg_gap − remi", "U-LiRA accuracy − remi"], rows), ""]


def _white_box(root: Path, path: Path, bench: Mapping[str, Any]) -> list[str]:
    """The white-box checks' means, where a bench ran them."""
    methods = bench["methods"]
    if "white_box" not in methods["original"]:
        return []
    figures = ("probe_stem_auc", "probe_penultimate_auc", "gradient_norm_auc", "gradient_norm_tpr_at_1pct_fpr")
    relearn = "relearn_epochs" in methods["original"]["white_box"]
    # each model's AUCs paired with retrain's per seed, where there are seeds to pair
    paired = (white_box_comparisons(methods) or {}) if len(bench["seeds"]) > 1 else {}
    differences = DEEP_AGAINST_REFERENCE if paired else ()
    rows = [[name, *(num(entry["white_box"][f], 2 if "tpr" in f else 3) for f in figures),
             *(_interval(paired.get(name, {}).get(f)) for f in differences),
             *([", ".join("-" if e is None else str(e) for e in entry["white_box"]["relearn_epochs"])]
               if relearn else [])] for name, entry in methods.items()]
    page = link(root, path.with_suffix(".md"), f"{bench['dataset']} `{bench['forget']}`")
    seed = methods["original"]["per_seed"][0]["white_box"]["probe_stem"]
    blind = powerless(methods["original"]["white_box"], methods[bench["gold_standard"]]["white_box"],
                      seed["members"], seed["nonmembers"])
    verdict = (" The original is within two standard errors of retrain on " + ", ".join(f"`{b}`" for b in blind)
               + ": those checks prove nothing here." if blind else "")
    intervals = (" Penultimate probe and gradient-norm AUC − retrain's: per seed, mean and 95% paired t interval "
                 "(`*`: it excludes 0)." if paired else "")
    return [f"White-box checks on {page} (forget against same-class test samples; read each row against "
            f"retrain's, as a probe that finds nothing scores below 0.5 out of fold).{verdict}{intervals}", "",
            *table(["method", "probe AUC, stem", "probe AUC, penultimate", "gradient-norm AUC",
                    "gradient-norm TPR % at 1% FPR",
                    *(["penultimate − retrain", "gradient-norm − retrain"] if paired else []),
                    *(["relearn epochs per seed"] if relearn else [])], rows), ""]


def _tunings(root: Path) -> list[str]:
    """What equal tuning chose, per tuning.json under docs/bench."""
    from fedunlearn.simulations.bench_tuning import describe_seeds, validation_seeds

    lines = []
    for path in sorted((root / "bench").glob("*/tuning.json")):
        tuning = load_json(path)
        setup, select = tuning["setup"], tuning.get("select", "avg_gap")  # older tunings chose on avg_gap
        deep = select == "deep_gap"
        rows = [[method, ", ".join(f"{k}={v}" for k, v in entry["chosen"].items()), num(entry["avg_gap"], 2),
                 *([num(entry["deep_gap"], 2)] if deep else []), len(entry["configurations"])]
                for method, entry in tuning["methods"].items()]
        page = link(root, path.with_suffix(".md"), f"{setup['dataset']} / {setup['model']} / `{setup['forget']}`")
        inside = " (the output figures and the white-box AUCs against retrain)" if deep else ""
        lines += [f"Equal tuning on {page}: each method's best of at most 12 configurations, by mean {select}{inside} "
                  f"on {describe_seeds(validation_seeds(tuning))} (two retrains of a seed differ by avg_gap "
                  f"{num(tuning['floor_avg_gap'], 2)}); commit {commit_cell(tuning)}:", "",
                  *table(["method", "chosen", "validation avg_gap", *(["validation deep_gap"] if deep else []),
                          "configurations"], rows), ""]
    return lines


def _matrix(root: Path) -> list[str]:
    """The matrix of architectures, datasets and requests (docs/bench/matrix)."""
    from fedunlearn.simulations.bench_matrix import matrix_table

    path = root / "bench" / "matrix" / "matrix.json"
    if not path.exists():
        return []
    return [f"The matrix ({link(root, path.with_suffix('.md'), 'matrix.md')}), every method at its defaults:", "",
            *matrix_table(load_json(path), folder="bench/matrix/"), ""]
