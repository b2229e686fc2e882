"""Render the audit's result files as markdown: ``python -m fedunlearn.simulations.audit_docs``.

Reads ``docs/audit/power.json`` (``simulations.audit_power``) and every
``docs/federation/*/sweep.json`` (``simulations.seed_sweep``) and writes a
``.md`` beside each. Tables are only ever made here, from the JSON, which
names the commit and the command that produced it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["main", "render_power", "render_sweep"]


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "pass" if value else "FAIL"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _source(result: dict[str, Any]) -> list[str]:
    dirty = " (with uncommitted changes)" if result.get("dirty") else ""
    return [f"Made by `{result['command']}` at commit `{result['commit'][:12]}`{dirty}.", ""]


def render_power(result: dict[str, Any]) -> str:
    config = result["config"]
    lines = ["# Gate power on a memorising model", "", *_source(result),
             f"{config['dataset']} / {config['model']}: a target trained {config['epochs']} epochs on {config['pool']} "
             f"images (train accuracy {result['target']['train_accuracy']:.1f}%, unseen images "
             f"{result['target']['outsider_accuracy']:.1f}%). Each audit compares n drawn members with "
             f"{config['nonmembers']} sealed non-members; {config['draws']} draws per size; the gate's false-alarm "
             f"rate is 0.05 over {config['looks']} looks for either attack family.", "",
             "Share of audits in which the gate fails the model:", "",
             "| forget-set size | original, loss attack | original, LiRA + RMIA | never trained on them, loss | "
             "never trained on them, LiRA + RMIA |", "|---|---|---|---|---|"]
    for size, rates in result["power"].items():
        original, never = rates["original"], rates["never_trained"]
        lines.append(f"| {size} | {_cell(original['loss'], 2)} | {_cell(original['reference'], 2)} | "
                     f"{_cell(never['loss'], 2)} | {_cell(never['reference'], 2)} |")
    lines += ["", f"Reference designs ({config['references']} references each), the whole pool against "
              f"{config['outsiders']} unseen images:", "",
              "| design | attack | AUC | TPR at 1% FPR (%) |", "|---|---|---|---|"]
    names = {"offline_public": "offline, public data (the federation's)",
             "in_out_halves": "each sample IN for half (LiRA's online design)"}
    for design, readings in result["design"].items():
        lines += [f"| {names.get(design, design)} | {attack} | {_cell(r['auc'])} | {_cell(r['tpr_at_1pct_fpr'], 1)} |"
                  for attack, r in readings.items()]
    return "\n".join(lines) + "\n"


def render_sweep(result: dict[str, Any]) -> str:
    counts = result["counts"]
    note = [result["note"], ""] if result.get("note") else []
    lines = [f"# {result['scenario']} over {counts['of']} seeds", "", *_source(result), *note,
             f"The gate failed the do-nothing original in {counts['original_failed']} of {counts['of']} seeds, passed "
             f"federated retrain in {counts['retrain_passed']} and passed the unlearned model in "
             f"{counts['unlearned_passed']}.", "",
             "| seed | unlearned | original | retrain | deciding attack | AUC unlearned / original / retrain | "
             "ta unlearned / retrain | rounds | time ratio | bytes ratio | references (s, one-off) | run at |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["seeds"]:
        auc, ta, refs = row["forget_auc"], row["ta"], row.get("references") or {}
        lines.append(
            f"| {row['seed']} | {_cell(row['unlearned_passed'])} | {_cell(row['original_passed'])} | "
            f"{_cell(row['retrain_passed'])} | {_cell(row['attack'])} | {_cell(auc['unlearned'])} / "
            f"{_cell(auc['original'])} / {_cell(auc['federated_retrain'])} | {_cell(ta['unlearned'], 2)} / "
            f"{_cell(ta['federated_retrain'], 2)} | {_cell(row['rounds'])} | {_cell(row['time_ratio'])} | "
            f"{_cell(row['bytes_ratio'])} | {_cell(refs.get('training_seconds'), 0)} | "
            f"{(row.get('commit') or 'unrecorded')[:12]} |")
    lines += _anchor_lines(result["seeds"])
    lines += _time_lines(result["seeds"])
    lines += ["", "What each seed's report says:", ""]
    lines += [f"- seed {row['seed']}: {row['evidence']}" for row in result["seeds"]]
    return "\n".join(lines) + "\n"


def _anchor_lines(seeds: list[dict[str, Any]]) -> list[str]:
    """The other federated baselines per seed, where the runs had any (older sweeps did not record them)."""
    rows = [(row["seed"], name, anchor) for row in seeds for name, anchor in (row.get("anchors") or {}).items()]
    if not rows:
        return []
    lines = ["", "The other baselines of each phase, judged by the same gate (time and bytes against federated "
             "retrain; storage: what the server kept during training to build it):", "",
             "| seed | baseline | gate | forget AUC | ta | ua | rounds | time ratio | bytes ratio | storage MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for seed, name, a in rows:
        storage = None if a.get("storage_bytes") is None else a["storage_bytes"] / 1e6
        lines.append(f"| {seed} | {name} | {_cell(a['passed'])} | {_cell(a['forget_auc'])} | {_cell(a['ta'], 2)} | "
                     f"{_cell(a['ua'], 2)} | {_cell(a['rounds'])} | {_cell(a['time_ratio'])} | "
                     f"{_cell(a['bytes_ratio'])} | {_cell(storage, 1)} |")
    return lines


def _time_lines(seeds: list[dict[str, Any]]) -> list[str]:
    """Each phase round's seconds by part, beside federated retrain's, where the runs recorded them."""
    rows = [(row, i, part) for row in seeds for i, part in enumerate(row.get("round_seconds") or [], start=1)]
    if not rows:
        return []
    lines = ["", "Where the unlearning phase's time went, round by round (seconds; nodes: from the round's model "
             "out to the last reply, the requesters' ReMI and, where the scenario trains beside it, every node's "
             "training half; shaping: aggregation and the server's fine-tuning; audit: the gate's attacks; ta: its "
             "test-accuracy check):", "",
             "| seed | round | nodes | shaping | audit | ta | phase in all | federated retrain |",
             "|---|---|---|---|---|---|---|---|"]
    for row, i, part in rows:
        seconds = row["seconds"]
        lines.append(f"| {row['seed']} | {i} | {_cell(part['nodes'], 2)} | {_cell(part['shaping'], 2)} | "
                     f"{_cell(part['audit'], 2)} | {_cell(part['ta'], 2)} | {_cell(seconds['unlearning'], 2)} | "
                     f"{_cell(seconds['federated_retrain'], 1)} |")
    return lines


def main(root: Path = Path("docs")) -> None:
    power = root / "audit" / "power.json"
    if power.exists():
        power.with_suffix(".md").write_text(render_power(json.loads(power.read_text())))
    for sweep in sorted((root / "federation").glob("*/sweep.json")):
        sweep.with_suffix(".md").write_text(render_sweep(json.loads(sweep.read_text())))


if __name__ == "__main__":
    main()
