"""A scenario over several seeds: the gate's verdicts on the unlearned model and on its controls.

Each seed runs as its own ``fedunlearn simulate`` process (a fresh Ray per run)
into ``<runs>/seed-<s>``; the summary keeps, per seed, what the gate said about
the unlearned model, the do-nothing original and federated retrain, and what
the unlearning phase cost against retrain. The references' one-off cost is
kept apart, as the reports keep it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from fedunlearn.common.nodes.storage import atomic_write_json
from fedunlearn.common.provenance import git_commit

__all__ = ["seed_summary", "sweep"]


def _verdict(section: dict[str, Any] | None) -> bool | None:
    return None if not section else bool(section.get("passed"))


def _ratio(part: float | None, whole: float | None) -> float | None:
    return None if part is None or not whole else part / whole


CONTROLS = ("original", "federated_retrain")  # the baselines every row already shows


def _anchors(baselines: dict[str, Any], retrain: dict[str, Any]) -> dict[str, Any]:
    """The other baselines the phase ran (federated fine-tuning, FedEraser, PGA): the gate's verdict, what
    it read, accuracy, and cost against retrain, with the storage FedEraser needs."""
    return {name: {"passed": _verdict(anchor.get("gate")), "forget_auc": anchor.get("forget_auc"),
                   "ta": anchor.get("ta"), "ua": anchor.get("ua"), "rounds": anchor.get("rounds"),
                   "time_ratio": _ratio(anchor.get("seconds"), retrain.get("seconds")),
                   "bytes_ratio": _ratio(anchor.get("bytes"), retrain.get("bytes")),
                   "storage_bytes": anchor.get("storage_bytes")}
            for name, anchor in baselines.items() if name not in CONTROLS and anchor}


def seed_summary(report: dict[str, Any]) -> dict[str, Any]:
    """One seed's row: verdicts, deciding attack readings and cost ratios (None where a run has no phase),
    and every other baseline beside them (``anchors``)."""
    unlearning, controls = report.get("unlearning") or {}, report.get("controls") or {}
    retrain = (report.get("baselines") or {}).get("federated_retrain") or {}
    gate = unlearning.get("gate") or {}
    original = (report.get("baselines") or {}).get("original") or {}
    return {
        "seed": report.get("seed"),
        "commit": report.get("commit"),  # each seed's own: a sweep may reuse runs made before it
        "unlearned_passed": _verdict(gate),
        "original_passed": _verdict(controls.get("original")),
        "retrain_passed": _verdict(controls.get("federated_retrain")),
        "attack": gate.get("attack"),
        "forget_auc": {"unlearned": unlearning.get("forget_auc"), "original": original.get("forget_auc"),
                       "federated_retrain": retrain.get("forget_auc")},
        "ta": {"unlearned": unlearning.get("ta"), "federated_retrain": retrain.get("ta")},
        "rounds": unlearning.get("rounds"),
        "time_ratio": _ratio(unlearning.get("seconds"), retrain.get("seconds")),
        "seconds": {"unlearning": unlearning.get("seconds"), "federated_retrain": retrain.get("seconds")},
        "round_seconds": unlearning.get("round_seconds"),  # where each phase round's time went
        "bytes_ratio": _ratio(unlearning.get("bytes"), retrain.get("bytes")),
        "references": report.get("references"),
        "evidence": controls.get("evidence"),
        "anchors": _anchors(report.get("baselines") or {}, retrain),
    }


def _count(rows: list[dict[str, Any]], key: str, value: bool) -> int:
    return sum(row[key] is value for row in rows)


def sweep(scenario: Path, seeds: list[int], runs: Path, out: Path, note: str = "") -> dict[str, Any]:
    """Run every seed (a seed whose report already exists is read, not rerun) and write ``out``;
    ``note`` says what a reader must know about how the runs were made (e.g. which were reused)."""
    rows = []
    for seed in seeds:
        run_dir = runs / f"seed-{seed}"
        report_path = run_dir / "report.json"
        if not report_path.exists() or json.loads(report_path.read_text()).get("status") != "completed":
            simulate = [sys.executable, "-c", "from fedunlearn.simulations.cli import main; main()", "simulate"]
            subprocess.run([*simulate, str(scenario), "--seed", str(seed), "--out", str(run_dir)], check=True)
        rows.append(seed_summary(json.loads(report_path.read_text())))
    commit, dirty = git_commit()
    summary = {
        "scenario": scenario.stem, "commit": commit, "dirty": dirty,
        "command": f"python -m fedunlearn.simulations.seed_sweep {scenario} --seeds {','.join(map(str, seeds))}",
        "note": note,
        "seeds": rows,
        "counts": {"original_failed": _count(rows, "original_passed", False),
                   "retrain_passed": _count(rows, "retrain_passed", True),
                   "unlearned_passed": _count(rows, "unlearned_passed", True), "of": len(rows)},
    }
    atomic_write_json(out, summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Run a scenario over seeds and summarise the gate's verdicts.")
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--runs", type=Path, help="run directories (default runs/<scenario>-sweep)")
    parser.add_argument("--out", type=Path, help="summary JSON (default docs/federation/<scenario>/sweep.json)")
    parser.add_argument("--note", default="", help="how the runs were made, where it is not this command alone")
    args = parser.parse_args(argv)
    name = args.scenario.stem
    sweep(args.scenario, [int(s) for s in args.seeds.split(",")], args.runs or Path("runs") / f"{name}-sweep",
          args.out or Path("docs/federation") / name / "sweep.json", args.note)


if __name__ == "__main__":
    main()
