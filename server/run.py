"""The whole run: FedAvg rounds, a status check before each, an unlearning phase when needed.

Before every round the server asks each node for its status. Pending requests
(not yet tried ``max_attempts`` times) start an unlearning phase before the
round trains. ``after_round`` hears each finished round's number: a simulation
files the scenario's requests there, exactly as operators would on real nodes,
and the loop itself knows nothing of simulations.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from fedunlearn.common.audit.gate import GateResult
from fedunlearn.common.models import ModelSpec, build_model
from fedunlearn.common.provenance import git_commit
from fedunlearn.server.edge_phase import EdgeContext, EdgeRecord, export_unaudited
from fedunlearn.server.evaluation import CentralEvaluator
from fedunlearn.server.federation import Federation, NodeStatus
from fedunlearn.server.public_finetune import PublicFinetune
from fedunlearn.server.references import ReferenceModels
from fedunlearn.server.unlearning_phase import PhaseRecord, run_unlearning_phase

__all__ = ["Event", "RunRecord", "run_federation"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """Progress for whoever watches (the simulate command's progress bar)."""

    kind: str  # "round", "phase-round", "phase-done"
    round: int
    detail: str = ""


@dataclass
class RunRecord:
    partitions: dict[int, int] = field(default_factory=dict)  # node id -> partition
    accuracy: list[tuple[int, float]] = field(default_factory=list)  # (round, ta)
    training_seconds: float = 0.0
    training_bytes: int = 0
    phases: list[PhaseRecord] = field(default_factory=list)
    final_state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    final_ta: float = 0.0
    final_export: EdgeRecord | None = None  # set when no phase published an export: the final model's
    failures: list[str] = field(default_factory=list)
    references: dict[str, float | int] | None = None  # the audit's reference models: count and one-off cost
    # (commit, uncommitted changes) of the code that ran, taken as the run starts: a report written at the end
    # of a long run would otherwise name whatever HEAD had become by then
    provenance: tuple[str, bool] = ("unknown", False)


def _due(statuses: dict[int, NodeStatus], attempts: Counter[str], max_attempts: int) -> dict[int, NodeStatus]:
    """Statuses of nodes whose pending requests may still be tried."""
    due = {}
    for node, status in statuses.items():
        live = tuple(r for r in status.pending if attempts[r] < max_attempts)
        if live != status.pending:
            log.warning("node %d: requests %s reached %d attempts; left pending", node,
                        sorted(set(status.pending) - set(live)), max_attempts)
        due[node] = status.keeping(live)
    return due


def run_federation(
    fed: Federation, evaluator: CentralEvaluator, spec: ModelSpec, *,
    after_round: Callable[[int], object] | None = None, on_event: Callable[[Event], None] | None = None,
    edge: EdgeContext | None = None, references: ReferenceModels | None = None,
    validation: CentralEvaluator | None = None, finetune: PublicFinetune | None = None,
) -> RunRecord:
    scenario = fed.scenario
    notify = on_event or (lambda _e: None)
    record = RunRecord(provenance=git_commit())
    if references is not None:
        record.references = _calibrate(fed, references)
    start = build_model(spec, seed=scenario.seed).state_dict()
    state = {k: v.clone() for k, v in start.items()}
    attempts: Counter[str] = Counter()
    for round_ in range(1, scenario.federation.rounds + 1):
        began = time.perf_counter()
        with fed.messenger.metered() as status_traffic:
            statuses = _due(fed.status(), attempts, scenario.unlearning.max_attempts)
        record.partitions = record.partitions or {n: s.partition for n, s in statuses.items()}
        if any(s.pending for s in statuses.values()):
            attempts.update(r for s in statuses.values() for r in s.pending)
            def phase_round(k: int, gate: GateResult | None, r: int = round_) -> None:
                notify(Event("phase-round", r, _gate_text(k, gate)))

            phase, state = run_unlearning_phase(fed, evaluator, spec, state, statuses, plan=scenario.unlearning,
                                                baselines=scenario.baselines, after_round=round_ - 1,
                                                start=start, recipe=scenario.federation.recipe(),
                                                validation=validation, finetune=finetune,
                                                on_round=phase_round, edge=edge)
            record.phases.append(phase)
            notify(Event("phase-done", round_, "gate passed" if phase.passed else "gate failed"))
            began = time.perf_counter()
        with fed.messenger.metered() as traffic:
            trainers = [n for n, s in statuses.items() if s.num_train > 0]
            state = fed.train_round(state, round_, trainers, keep=True)
        record.training_seconds += time.perf_counter() - began
        record.training_bytes += status_traffic.total + traffic.total
        ta = evaluator.ta(state)
        record.accuracy.append((round_, ta))
        notify(Event("round", round_, f"ta {ta:.1f}%"))
        if after_round is not None:
            after_round(round_)
    record.final_state, record.final_ta = state, record.accuracy[-1][1]
    if edge is not None and not any(p.export is not None for p in record.phases):
        # no phase exported (no request, or none passed): the final model, with nothing to audit it on;
        # a phase whose artifacts failed their gate leaves nothing published, on purpose
        record.final_export = export_unaudited(edge, spec, state)
    record.failures = list(fed.failures)
    return record


def _calibrate(fed: Federation, references: ReferenceModels) -> dict[str, float | int]:
    """Hand the references to every node once; their cost is the audit's one-off price, kept apart."""
    began = time.perf_counter()
    with fed.messenger.metered() as traffic:
        fed.calibrate(references)
    return {"models": len(references), "train_size": references.train_size, "epochs": references.epochs,
            "training_seconds": references.seconds, "calibration_seconds": time.perf_counter() - began,
            "calibration_bytes": traffic.total}


def _gate_text(k: int, gate: GateResult | None) -> str:
    if gate is None:
        return f"unlearning round {k}: no audit could be pooled, fail"
    auc = "no deciding attack" if gate.forget_auc is None else f"{gate.attack} AUC {gate.forget_auc:.3f}"
    return f"unlearning round {k}: {auc}, {'pass' if gate.passed else 'fail'}"
