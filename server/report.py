"""The run directory: report.json (machine), report.md (people), plots and model files.

The report's shape is stable for outside readers: scenario facts, training,
requests, the unlearning phase with its gate, the baselines (docs/baselines.md), artifacts
(paths relative to the run directory) and, in a simulation, the ground truth
(forgotten and test sample ids) for outside evaluation.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedunlearn.common.audit.gate import GateResult
from fedunlearn.common.checkpoint import dataset_meta, save_checkpoint
from fedunlearn.common.data.tensors import DatasetBundle
from fedunlearn.common.models import ModelSpec
from fedunlearn.common.nodes.storage import atomic_write_json
from fedunlearn.common.provenance import process_command
from fedunlearn.common.scenario import Scenario
from fedunlearn.common.world import SimulatedWorld
from fedunlearn.server.evidence import evidence
from fedunlearn.server.plots import plot_run
from fedunlearn.server.run import RunRecord
from fedunlearn.server.unlearning_phase import ModelFigures, PhaseRecord

__all__ = ["build_report", "write_failure", "write_run"]

BASELINES = ("federated_retrain", "federated_finetune", "federaser", "pga", "original")
CONTROLS = ("original", "federated_retrain")


def _figures(figures: ModelFigures | None) -> dict[str, Any] | None:
    return None if figures is None else asdict(figures)


def _gate(gate: GateResult | None) -> dict[str, Any] | None:
    return None if gate is None else asdict(gate)


def _controls(phase: PhaseRecord) -> dict[str, Any]:
    """The same gate on the do-nothing original and on retrain, with what the evidence supports."""
    verdicts = {name: phase.verdicts.get(name) for name in CONTROLS}
    return {**{name: None if v is None else {"passed": v.passed, "reasons": list(v.reasons), "attack": v.attack,
                                             "forget_auc": v.forget_auc, "attacks": _readings(v)}
               for name, v in verdicts.items()},
            "evidence": evidence(phase.gate, verdicts["original"], verdicts["federated_retrain"])}


def _readings(gate: GateResult) -> dict[str, dict[str, Any]]:
    """Every attack's AUC and TPR on a control, the population attacks beside the deciding ones."""
    return {name: {"auc": v.auc, "tpr_at_1pct_fpr": v.tpr_at_1pct_fpr, "deciding": v.deciding}
            for name, v in gate.attacks.items()}


def _phase(phase: PhaseRecord) -> dict[str, Any]:
    return {
        "method": phase.method,
        "after_round": phase.after_round,
        **(_figures(phase.figures) or {}),
        "gate": _gate(phase.gate),
        "controls": _controls(phase),
        "forget_auc_per_round": [g.forget_auc for g in phase.gate_history],
        "gate_per_round": [{"passed": g.passed, "forget_auc": g.forget_auc, "reasons": list(g.reasons)}
                           for g in phase.gate_history],
        "model_hash_before": phase.model_hash_before,
        "model_hash": phase.model_hash,
        "forgotten_classes": list(phase.forgotten_classes),
        "committed": phase.committed,
        "unconfirmed": phase.unconfirmed,
        "client_work": [asdict(work) for work in phase.client_work],
        "round_kinds": phase.round_kinds, "step_scales": phase.step_scales,
        "round_seconds": [asdict(seconds) for seconds in phase.round_seconds],
    }


def _unlearning(phases: list[PhaseRecord]) -> dict[str, Any]:
    """The last phase, charged with the rounds, seconds and bytes of every attempt before it:
    a phase whose gate failed was part of the price of the one that passed."""
    summary = _phase(phases[-1])
    spent = [p.figures for p in phases if p.figures is not None]
    summary.update(attempts=len(phases), rounds=sum(f.rounds for f in spent),
                   seconds=sum(f.seconds for f in spent), bytes=sum(f.bytes for f in spent))
    return summary


def _export(record: RunRecord) -> dict[str, Any] | None:
    """The published edge export: the last passing phase's audited artifacts, else the final model's."""
    phase = next((p for p in reversed(record.phases) if p.export is not None), None)
    edge = phase.export if phase is not None else record.final_export
    if edge is None:
        return None
    model = "unlearned" if phase is not None else "final"
    fp32, int8 = edge.figures(model, "fp32"), edge.figures(model, "int8")
    summary: dict[str, Any] = {
        "model": model, "folder": "export", "published": edge.published, "reasons": edge.reasons,
        "parity_max_abs_diff": edge.parity_max_abs_diff, "int8_top1_agreement": edge.int8_top1_agreement,
        "torch_ta": edge.torch_ta.get(model), "fp32_ta": fp32 and fp32.ta, "int8_ta": int8 and int8.ta,
        "fp32_forget_auc": fp32 and fp32.forget_auc, "int8_forget_auc": int8 and int8.forget_auc,
        "artifacts": [{"model": a.model, "file": a.file, "precision": a.precision, "sha256": a.sha256,
                       "bytes": a.bytes, "ta": a.ta, "forget_auc": a.forget_auc,
                       "gate_passed": None if a.gate is None else a.gate.passed} for a in edge.artifacts],
    }
    if phase is not None:  # forget AUC of each model as torch, fp32 ONNX and int8 ONNX: does quantization leak?
        torch_auc = {"unlearned": phase.gate.forget_auc if phase.gate else None,
                     **{n: f.forget_auc for n, f in phase.baselines.items()}}
        summary["leakage"] = {
            name: {"torch": torch_auc.get(name), **{p: (f := edge.figures(name, p)) and f.forget_auc
                                                   for p in ("fp32", "int8")}}
            for name in dict.fromkeys(a.model for a in edge.artifacts)}
    return summary


def _baseline(phase: PhaseRecord, name: str) -> dict[str, Any] | None:
    """A baseline's figures and the gate's verdict on it, with the deciding attack and every attack's reading."""
    figures = _figures(phase.baselines.get(name))
    verdict = phase.verdicts.get(name)
    if figures is None:
        return None
    gate = None if verdict is None else {"passed": verdict.passed, "reasons": list(verdict.reasons),
                                         "attack": verdict.attack, "attacks": _readings(verdict)}
    return {**figures, "gate": gate}


def _requests(record: RunRecord) -> list[dict[str, Any]]:
    """Every request the server handled, with its final status as the server knows it."""
    rows: dict[str, dict[str, Any]] = {}
    for phase in record.phases:
        for request in phase.requests:
            status = ("committed" if request.request_id in phase.committed
                      else "unconfirmed" if request.request_id in phase.unconfirmed else "pending")
            rows[request.request_id] = {**asdict(request), "status": status}
    return list(rows.values())


def build_report(scenario: Scenario, spec: ModelSpec, record: RunRecord, artifacts: dict[str, Any],
                 world: SimulatedWorld | None, bundle: DatasetBundle) -> dict[str, Any]:
    phase = record.phases[-1] if record.phases else None
    commit, dirty = record.provenance
    report: dict[str, Any] = {
        "status": "completed", "commit": commit, "dirty": dirty, "command": process_command(),
        "scenario": scenario.name, "dataset": scenario.data.dataset, "model": spec.name,
        "clients": scenario.federation.clients, "seed": scenario.seed,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "training": {"rounds": scenario.federation.rounds, "seconds": record.training_seconds,
                     "bytes": record.training_bytes, "ta": record.final_ta,
                     "ta_per_round": [ta for _, ta in record.accuracy]},
        "requests": _requests(record),
        "unlearning": None if phase is None else _unlearning(record.phases),
        "controls": None if phase is None else _controls(phase),
        "baselines": {name: _baseline(phase, name) if phase else None for name in BASELINES},
        "references": record.references,
        "phases": [_phase(p) for p in record.phases],
        "export": _export(record),
        "failures": list(record.failures),
        "artifacts": artifacts,
    }
    if world is not None:
        report["evaluation"] = {
            "forget_ids": sorted(i for f in world.filed for i in f.forget_ids),
            "test_ids": bundle.test.ids.tolist(),
            "id_space": "row indices of sklearn.datasets.load_digits()" if bundle.name == "digits"
            else "indices into the official train and test splits",
        }
    return report


def _save_models(run_dir: Path, spec: ModelSpec, record: RunRecord, bundle: DatasetBundle) -> dict[str, Any]:
    """model.pt and models/*.pt, each carrying what an export needs to feed it (dataset, classes, preprocessing)."""
    data = dataset_meta(bundle)
    saved: dict[str, Any] = {"model": "model.pt"}
    sha = save_checkpoint(run_dir / "model.pt", record.final_state, spec, {"role": "final global model", **data})
    saved["model_sha256"] = sha
    if record.phases:
        for name, state in record.phases[-1].states.items():
            save_checkpoint(run_dir / "models" / f"{name}.pt", state, spec, {"role": name, **data})
            saved.setdefault("models", {})[name] = f"models/{name}.pt"
    return saved


def write_run(run_dir: Path, scenario: Scenario, spec: ModelSpec, record: RunRecord, *,
              world: SimulatedWorld | None, bundle: DatasetBundle) -> dict[str, Any]:
    run_dir.mkdir(parents=True, exist_ok=True)
    artifacts = _save_models(run_dir, spec, record, bundle)
    artifacts["export"] = "export"
    artifacts["plots"] = plot_run(run_dir, record, world=world, spec=spec)
    artifacts["report_md"] = "report.md"
    if world is not None:
        artifacts["nodes"] = os.path.relpath(world.nodes_root.resolve(), run_dir.resolve())
    report = build_report(scenario, spec, record, artifacts, world, bundle)
    atomic_write_json(run_dir / "report.json", report)
    (run_dir / "report.md").write_text(render_markdown(report))
    return report


def write_failure(run_dir: Path, error: str) -> None:
    """A run that stopped still leaves a report saying why (``flwr run`` exits 0 regardless)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "report.json", {"status": "failed", "error": error,
                                                "finished_at": datetime.now(UTC).isoformat(timespec="seconds")})


def _cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _export_markdown(export: dict[str, Any] | None) -> list[str]:
    if not export:
        return []
    lines = ["", f"Edge export ({export['model']} model, published: {', '.join(export['published']) or 'nothing'}): "
             f"fp32 parity {_cell(export['parity_max_abs_diff'], 7)}, int8 top-1 agreement "
             f"{_cell(export['int8_top1_agreement'], 4)}, ta torch {_cell(export['torch_ta'])} / fp32 "
             f"{_cell(export['fp32_ta'])} / int8 {_cell(export['int8_ta'])}", ""]
    if export.get("leakage"):
        lines += ["| forget AUC | torch | fp32 ONNX | int8 ONNX |", "|---|---|---|---|"]
        lines += [f"| {name} | {_cell(row['torch'], 3)} | {_cell(row['fp32'], 3)} | {_cell(row['int8'], 3)} |"
                  for name, row in export["leakage"].items()]
    return lines + [f"- {reason}" for reason in export["reasons"]]


def render_markdown(report: dict[str, Any]) -> str:
    lines = [f"# {report['scenario']}: {report['dataset']} / {report['model']}, {report['clients']} clients, "
             f"seed {report['seed']}", "",
             f"Training: {report['training']['rounds']} rounds, {report['training']['seconds']:.1f} s, "
             f"final ta {report['training']['ta']:.2f}%", ""]
    unl = report["unlearning"]
    if unl is None:
        lines.append("No forget request reached the server.")
        return "\n".join(lines + _export_markdown(report.get("export"))) + "\n"
    gate = unl["gate"] or {}
    lines += [f"Unlearning ({unl['method']}): gate {'PASSED' if gate.get('passed') else 'FAILED'}", "",
              report["controls"]["evidence"], ""]
    if gate.get("attacks"):
        lines += ["| attack (unlearned) | decides | AUC | CI | tolerance | TPR at 1% FPR |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {name} | {'yes' if a['deciding'] else 'no'} | {a['auc']:.3f} | "
                  f"{a['ci'][0]:.3f}-{a['ci'][1]:.3f} | {a['tolerance']:.3f} | {a['tpr_at_1pct_fpr']:.1f} |"
                  for name, a in gate["attacks"].items()]
        lines.append("")
    lines += ["| model | rounds | seconds | MB | ta | ua | forget AUC | gate |", "|---|---|---|---|---|---|---|---|"]
    rows = [("unlearned", {**unl, "gate": gate})] + [(name, report["baselines"].get(name)) for name in BASELINES]
    for name, row in rows:
        if row:
            verdict = "-" if not row.get("gate") else ("pass" if row["gate"]["passed"] else "fail")
            lines.append(f"| {name} | {row['rounds']} | {row['seconds']:.1f} | {row['bytes'] / 1e6:.2f} | "
                         f"{_cell(row['ta'])} | {_cell(row['ua'])} | {_cell(row['forget_auc'], 3)} | {verdict} |")
    erased = report["baselines"].get("federaser")
    if erased:
        lines += ["", f"FedEraser kept {erased['storage_bytes'] / 1e6:.2f} MB of client updates on the server and "
                      f"rebuilt from {erased['rounds']} stored rounds."]
    lines += _export_markdown(report.get("export"))
    lines += ["", "Requests:", ""] + [
        f"- {r['request_id']} (partition {r['partition']}, {r['kind']}, {r['num_samples']} samples): {r['status']}"
        for r in report["requests"]]
    if report["failures"]:
        lines += ["", "Failures:", ""] + [f"- {f}" for f in report["failures"]]
    return "\n".join(lines) + "\n"
