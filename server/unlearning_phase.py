"""One unlearning phase: unlearn, aggregate, gate (repeat up to a budget), baselines, then commit.

Commit comes last because it purges the forgotten samples from the nodes: the
baselines (federated retrain from scratch without them, federated fine-tuning
on retain data, and the original "do nothing" model) are audited on the same
forget sets first, so every figure in the report is measured the same way.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from flwr.app import ConfigRecord, RecordDict

from fedunlearn.common import protocol as P
from fedunlearn.common.audit.exemplars import Exemplars
from fedunlearn.common.audit.gate import GateResult
from fedunlearn.common.checkpoint import state_sha256
from fedunlearn.common.models import ModelSpec
from fedunlearn.common.records import state_arrays
from fedunlearn.common.scenario import BaselinePlan, UnlearningPlan
from fedunlearn.common.training import TrainConfig
from fedunlearn.common.unlearning.projected_ascent import PROJECTED_ASCENT
from fedunlearn.server.aggregate import State, clip_update, train_and_forget_update, update_norm, with_unlearning_steps
from fedunlearn.server.baselines import Anchor, fedavg_rounds, pga
from fedunlearn.server.edge_phase import EdgeContext, EdgeRecord, stage_exports
from fedunlearn.server.evaluation import CentralEvaluator
from fedunlearn.server.federaser import calibration_recipe, federaser
from fedunlearn.server.federation import AuditRound, Federation, NodeStatus
from fedunlearn.server.messaging import Replies
from fedunlearn.server.public_finetune import PublicFinetune
from fedunlearn.server.references import MAX_CLASS_EXEMPLARS, lent_exemplars

__all__ = ["ModelFigures", "PhaseRecord", "RoundSeconds", "RoundShaping", "StepGuard", "run_unlearning_phase"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelFigures:
    """One model's row in the report (ua in percent; forget_auc: the gate's deciding attack, pooled)."""

    rounds: int
    seconds: float
    bytes: int
    ta: float
    ua: float | None
    forget_auc: float | None
    storage_bytes: int = 0  # what the server kept to build it (FedEraser's stored updates)


@dataclass(frozen=True)
class PhaseRequest:
    """A request as the server handles it: what its node's status said, never its sample ids."""

    request_id: str
    partition: int
    kind: str
    num_samples: int


@dataclass(frozen=True)
class ClientWork:
    """One requester's unlearning run in one round of the phase."""

    round: int
    partition: int
    forget_size: float  # what its status said the requests hold (the weight its step gets)
    steps: float
    seconds: float
    update_scale: float  # 1.0, or the factor its update was scaled down by to the norm bound


@dataclass
class RoundSeconds:
    """Where one round of the phase spent its wall time, to show what a phase costs against retraining:
    the nodes' work until the last reply (the requesters' method and training, the others' training; a
    repair round's FedAvg too), the server's shaping of the replies (aggregation, step sizing, public
    fine-tuning), the requesters' audits until the last reply, and the candidate's test accuracy."""

    nodes: float = 0.0
    shaping: float = 0.0
    audit: float = 0.0
    ta: float = 0.0

    @contextmanager
    def timing(self, part: Literal["nodes", "shaping", "audit", "ta"]) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, part, getattr(self, part) + time.perf_counter() - began)


@dataclass
class PhaseRecord:
    after_round: int
    method: str
    requests: list[PhaseRequest]
    forgotten_classes: tuple[int, ...]
    figures: ModelFigures | None = None
    gate: GateResult | None = None
    gate_history: list[GateResult] = field(default_factory=list)
    gate_nodes: tuple[int, ...] = ()  # the nodes the last gate pooled: only their requests may be committed
    model_hash_before: str = ""
    model_hash: str | None = None  # set only when the gate passed (the model is published)
    baselines: dict[str, ModelFigures] = field(default_factory=dict)
    verdicts: dict[str, GateResult] = field(default_factory=dict)  # the same gate on each baseline's audits
    committed: list[str] = field(default_factory=list)
    unconfirmed: list[str] = field(default_factory=list)  # commit sent, no answer: the node's ledger decides
    export: EdgeRecord | None = None  # the edge export step (set when the gate passed and export is on)
    client_work: list[ClientWork] = field(default_factory=list)
    round_kinds: list[str] = field(default_factory=list)  # per round: "unlearn", or "repair" (FedAvg on retain)
    step_scales: list[float] = field(default_factory=list)  # per unlearning round, the share a StepGuard applied
    round_seconds: list[RoundSeconds] = field(default_factory=list)
    states: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)

    @property
    def passed(self) -> bool:
        return self.gate is not None and self.gate.passed


@dataclass(frozen=True)
class _Judged:
    """A model's audit round and the gate's verdict on it."""

    audits: AuditRound
    gate: GateResult | None
    ta: float


def _judge(fed: Federation, evaluator: CentralEvaluator, state: State, requesters: Mapping[int, list[str]],
           classes: tuple[int, ...], original_ta: float, label: str, seconds: RoundSeconds) -> _Judged:
    """The gate's verdict on ``state``; the audits' and the test accuracy's wall time go into ``seconds``."""
    with seconds.timing("audit"):
        audits = fed.audit(state, requesters, label)
    with seconds.timing("ta"):
        ta = evaluator.ta(state, classes)
    return _Judged(audits, fed.judge(audits, original_ta - ta), ta)


def _figures(judged: _Judged, *, rounds: int, seconds: float, bytes_: int, storage_bytes: int = 0) -> ModelFigures:
    gate = judged.gate
    return ModelFigures(rounds=rounds, seconds=seconds, bytes=bytes_, ta=judged.ta,
                        ua=None if gate is None else 100.0 - gate.forget_accuracy,
                        forget_auc=None if gate is None else gate.forget_auc, storage_bytes=storage_bytes)


@dataclass(frozen=True)
class StepGuard:
    """How much of a round's unlearning steps the server applies (``UnlearningPlan.step_scales``): the largest
    share whose model keeps its validation accuracy within ``max_drop`` points of the original's. A memorising
    federation shows why: the requesters' full steps hide their forget sets but cost several points of
    accuracy, and the repair round that wins them back brings the leak back with them."""

    validation: CentralEvaluator
    original_accuracy: float
    scales: tuple[float, ...]
    max_drop: float

    def applied(self, trained: State, full: State, classes: tuple[int, ...]) -> tuple[dict[str, torch.Tensor], float]:
        """``trained`` (the round's FedAvg) plus the largest allowed share of ``full - trained``, and the share;
        the smallest share when none keeps the accuracy."""
        for scale in self.scales:
            candidate = {k: v + scale * (full[k] - v) if v.is_floating_point() else full[k] for k, v in trained.items()}
            if self.original_accuracy - self.validation.ta(candidate, classes) <= self.max_drop:
                break
        return candidate, scale


@dataclass(frozen=True)
class RoundShaping:
    """What the server does to an unlearning round's model before the gate sees it: size the requesters'
    steps (``StepGuard``), then fine-tune on public images (``server/public_finetune.py``); either may be off."""

    guard: StepGuard | None = None
    finetune: PublicFinetune | None = None


def _unlearning_round(fed: Federation, plan: UnlearningPlan, state: State, requesters: dict[int, list[str]],
                      trainers: list[int], round_: int, record: PhaseRecord, seconds: RoundSeconds,
                      shaping: RoundShaping = RoundShaping()) -> dict[str, torch.Tensor]:
    """Unlearning round ``round_`` of the phase: requesters run ``plan``'s method (and train) while the other
    nodes train on retain data (server/aggregate.py), or the requesters' method alone where the plan has no
    training beside it; then the server shapes the result (``shaping``).
    Each requester's steps and seconds go into ``record.client_work``, the nodes' wall time into ``seconds``."""
    seed_round = _phase_seed(record, round_)
    method = {P.METHOD: plan.method, P.METHOD_PARAMS: json.dumps(plan.method_params()),
              P.TRAIN_BESIDE: plan.train_beside}
    messages: dict[int, tuple[str, RecordDict]] = {}
    for node, ids in requesters.items():
        extra = {} if fed.references is None else {P.CALIBRATION: fed.references.digest}
        config = fed.instructions(seed_round, **method, **{P.REQUEST_IDS: ids, **extra})
        messages[node] = (P.MSG_UNLEARN, RecordDict({P.ARRAYS: state_arrays(state), P.CONFIG: config}))
    for node in trainers if plan.train_beside else ():
        messages[node] = (P.MSG_TRAIN, RecordDict({P.ARRAYS: state_arrays(state),
                                                   P.CONFIG: fed.instructions(seed_round)}))
    with seconds.timing("nodes"):
        replies = fed.messenger.ask(messages, f"unlearn-{round_}")
    fed.note(f"unlearning round {round_}", replies.failures)
    for node in replies.failures:
        requesters.pop(node, None)  # its requests stay pending for a later phase
    updates = fed.collect_updates(replies.answers, state, f"unlearning round {round_}")
    for node in {u.node_id for u in updates} ^ set(replies.answers):
        requesters.pop(node, None)
    ours = [u for u in updates if u.node_id in requesters]
    halves = [(u.node_id, u.state if u.node_id not in requesters else u.trained, u.weight) for u in updates]
    trained = fed.clipped(state, [(n, s, w) for n, s, w in halves if s is not None and w > 0],
                          f"unlearning round {round_}")
    norms = [update_norm(state, s) for s, _ in trained] if plan.train_beside else fed.last_training_norms
    bound = _unlearning_bound(plan.update_clip, norms)
    unlearned = []
    for update in ours:
        clipped, scale = clip_update(state, update.state, bound)
        # weighted by what the node's own status said it holds under these requests, not by its reply
        size = max(fed.statuses[update.node_id].samples_under(requesters[update.node_id]), 1)
        unlearned.append((clipped, float(size)))
        record.client_work.append(ClientWork(
            round=round_, partition=fed.partitions.get(update.node_id, -1), forget_size=float(size),
            steps=update.metrics.get(P.STEPS, 0.0), seconds=update.metrics.get(P.SECONDS, 0.0), update_scale=scale))
        if scale == 0.0:
            fed.failures.append(f"unlearning round {round_}: node {update.node_id}'s unlearning update was not "
                                "applied: no training update this round to bound it by")
        elif scale < 1.0:
            fed.failures.append(f"unlearning round {round_}: node {update.node_id}'s unlearning update was "
                                f"{1 / scale:.1f}x the bound; scaled down to it")
    # forget sets of different nodes are disjoint samples: their steps add up; a class shared by
    # several nodes is one forget set seen from several sides: their steps are averaged
    combine: Literal["mean", "sum"] = "mean" if record.forgotten_classes else "sum"
    base = train_and_forget_update(state, trained, [], combine=combine)
    candidate = with_unlearning_steps(state, base, unlearned, combine=combine)
    if not unlearned:
        return candidate
    if shaping.guard is not None:
        candidate, scale = shaping.guard.applied(base, candidate, record.forgotten_classes)
        record.step_scales.append(scale)
    return candidate if shaping.finetune is None else shaping.finetune(candidate, seed_round)


def _phase_seed(record: PhaseRecord, round_: int) -> int:
    """The seed a phase's round hands the nodes: different from every training round's."""
    return record.after_round * 1000 + round_


def _unlearning_bound(clip: float, training_norms: Sequence[float]) -> float:
    """The largest norm an unlearning update may have: ``clip`` times the largest training update (unbounded
    when the clip is 0, off), the round's own or, in a round without training, the run's last own training
    round's. With none to measure by it is 0: a requester must not lift its own bound by leaving out its
    training half, so the step is not applied."""
    if clip == 0:
        return math.inf
    return clip * max(training_norms) if training_norms else 0.0


def run_unlearning_phase(
    fed: Federation, evaluator: CentralEvaluator, spec: ModelSpec, original: State,
    statuses: Mapping[int, NodeStatus], *, plan: UnlearningPlan, baselines: BaselinePlan, after_round: int,
    start: State, recipe: TrainConfig, validation: CentralEvaluator | None = None,
    finetune: PublicFinetune | None = None,
    on_round: Callable[[int, GateResult | None], None] | None = None, edge: EdgeContext | None = None,
) -> tuple[PhaseRecord, dict[str, torch.Tensor]]:
    """Run the phase; returns its record and the model training continues from (the unlearned
    model if the gate passed, else the original: a failed candidate may have lost utility). ``plan`` is the
    method and its budget, ``baselines`` what the phase is judged beside; ``start`` is the model round 1
    trained from (retraining starts there again) and ``recipe`` the nodes' local training (FedEraser
    calibrates with a share of it); ``validation`` sizes the unlearning steps when the plan searches them,
    and ``finetune`` is the server's public fine-tuning of each unlearning round's model.
    With ``edge``, the passing model is exported and its artifacts audited before the commit.
    A class phase lends every audit the server's test images of the forgotten classes, and a sample phase
    lends test images where the scenario asks for them (``_loan``)."""
    classes = tuple(sorted(set().union(*(s.forgotten_classes for s in statuses.values()))))
    with fed.lending(_loan(fed, evaluator, spec, classes, seed=after_round)):
        guard = None if validation is None else StepGuard(validation, validation.ta(original, classes),
                                                          plan.step_scales, plan.max_step_drop)
        return _phase(fed, evaluator, spec, original, statuses, classes, plan=plan, baselines=baselines,
                      after_round=after_round, start=start, recipe=recipe, shaping=RoundShaping(guard, finetune),
                      on_round=on_round, edge=edge)


def _loan(fed: Federation, evaluator: CentralEvaluator, spec: ModelSpec, classes: tuple[int, ...], *,
          seed: int) -> Exemplars | None:
    """The server's test images the phase's audits borrow (``common.audit.exemplars``): a class phase's, because
    most nodes hold too few unseen images of a class to audit it alone; a sample phase's when
    ``[audit].lent_test_images`` asks for them, because a node's sealed hold-out is too small to see a small leak."""
    limit = MAX_CLASS_EXEMPLARS if classes else fed.scenario.audit.lent_test_images
    if not limit:
        return None
    return lent_exemplars(evaluator.test, fed.references, spec, classes=classes or None, limit=limit, seed=seed,
                          device=evaluator.device)


def _phase(
    fed: Federation, evaluator: CentralEvaluator, spec: ModelSpec, original: State,
    statuses: Mapping[int, NodeStatus], classes: tuple[int, ...], *, plan: UnlearningPlan, baselines: BaselinePlan,
    after_round: int, start: State, recipe: TrainConfig, shaping: RoundShaping,
    on_round: Callable[[int, GateResult | None], None] | None, edge: EdgeContext | None,
) -> tuple[PhaseRecord, dict[str, torch.Tensor]]:
    requesters = {n: list(s.pending) for n, s in statuses.items() if s.pending}
    asked = {n: list(ids) for n, ids in requesters.items()}  # requesters loses nodes that fail on the way
    trainers = [n for n, s in statuses.items() if n not in requesters and s.num_train > 0]
    record = PhaseRecord(after_round=after_round, method=plan.method,
                         requests=[PhaseRequest(r, s.partition, k, c) for s in statuses.values()
                                   for r, k, c in zip(s.pending, s.pending_kinds, s.pending_counts, strict=True)
                                   if r in requesters.get(s.node_id, [])],
                         forgotten_classes=classes, model_hash_before=state_sha256(original))
    original_ta = evaluator.ta(original, classes)
    state = {k: v.clone() for k, v in original.items()}
    started = time.perf_counter()
    with_data = [n for n, s in statuses.items() if s.num_train > 0]  # a leaving node has none left
    with fed.messenger.metered() as traffic:
        repair = False
        for round_ in range(1, plan.max_rounds + 1):
            seconds = RoundSeconds()
            record.round_seconds.append(seconds)
            if repair:  # the last candidate hid the forget set but lost utility: train it back, then judge again
                with seconds.timing("nodes"):
                    state = fed.train_round(state, _phase_seed(record, round_), with_data)
            else:
                began = time.perf_counter()
                state = _unlearning_round(fed, plan, state, requesters, trainers, round_, record, seconds, shaping)
                seconds.shaping = time.perf_counter() - began - seconds.nodes
            record.round_kinds.append("repair" if repair else "unlearn")
            if not requesters:
                break
            judged = _judge(fed, evaluator, state, requesters, classes, original_ta, f"unlearn-{round_}", seconds)
            if judged.gate is not None:
                record.gate_history.append(judged.gate)
                record.gate_nodes = judged.audits.nodes
            if on_round is not None:
                on_round(round_, judged.gate)
            if judged.gate is not None and judged.gate.passed:
                break
            repair = judged.gate is not None and not judged.gate.leaked
    record.gate = record.gate_history[-1] if record.gate_history else None
    record.figures = ModelFigures(
        rounds=len(record.gate_history), seconds=time.perf_counter() - started, bytes=traffic.total,
        ta=evaluator.ta(state, classes),
        ua=None if record.gate is None else 100.0 - record.gate.forget_accuracy,
        forget_auc=None if record.gate is None else record.gate.forget_auc,
    )
    record.states = {"unlearned": state, "original": dict(original)}
    # the controls run whatever the verdict: they say whether the audit could see anything at all
    _control(fed, evaluator, record, "original", dict(original), requesters, original_ta)
    _baselines(fed, evaluator, spec, record, _BaselineRun(plan, baselines, requesters, with_data, after_round,
                                                          original_ta, start, recipe))
    gate = record.gate
    if gate is None or not gate.passed:
        log.warning("the leakage gate did not pass; nothing is published or committed")
        _defer(fed, asked, f"after round {after_round} the leakage gate did not pass: "
               + ("; ".join(gate.reasons) if gate is not None else "no audit could be pooled"))
        return record, dict(original)  # training goes on from the last published model
    record.model_hash = state_sha256(state)
    audited = {n: ids for n, ids in requesters.items() if n in record.gate_nodes}
    for node in sorted(set(requesters) - set(audited)):
        fed.failures.append(f"node {node}: its requests stay pending: its audit was not pooled into the gate")
    _defer(fed, {n: ids for n, ids in asked.items() if n not in audited},
           f"after round {after_round} this node's unlearning or audit was not pooled into the passing gate "
           "(the run's report says why); the next phase tries again")
    if edge is None:
        _commit(fed, record, gate, record.model_hash, audited)
        return record, state
    # the artifacts are audited on the forget sets, so before the commit purges them
    with stage_exports(fed, edge, spec, record.states, audited, [asdict(r) for r in record.requests],
                       record.forgotten_classes, gate) as staged:
        record.export = staged.record
        _commit(fed, record, gate, record.model_hash, audited)
        staged.publish(record.committed, record.unconfirmed)
    return record, state


def _defer(fed: Federation, left: Mapping[int, list[str]], why: str) -> None:
    """query.defer: each node notes in its ledger why these requests stay pending, so `fedunlearn node
    requests` says it too, not only the server's report. A node that misses it is noted, nothing more."""
    plan = {node: (P.MSG_DEFER, RecordDict({P.CONFIG: ConfigRecord({P.REQUEST_IDS: ids, P.DEFERRAL: why})}))
            for node, ids in left.items() if ids}
    if plan:
        fed.note("query.defer", fed.messenger.ask(plan, "defer").failures)


def _control(fed: Federation, evaluator: CentralEvaluator, record: PhaseRecord, name: str, state: State,
             requesters: Mapping[int, list[str]], original_ta: float, *, rounds: int = 0, seconds: float = 0.0,
             bytes_: int = 0, storage_bytes: int = 0) -> None:
    """Audit a baseline on the same forget sets and judge it with the same gate."""
    judged = _judge(fed, evaluator, state, requesters, record.forgotten_classes, original_ta, name, RoundSeconds())
    record.baselines[name] = _figures(judged, rounds=rounds, seconds=seconds, bytes_=bytes_,
                                      storage_bytes=storage_bytes)
    if judged.gate is not None:
        record.verdicts[name] = judged.gate


@dataclass(frozen=True)
class _BaselineRun:
    """What every baseline of a phase shares: the plans, the requests, the nodes with data, the original's ta."""

    unlearning: UnlearningPlan
    plan: BaselinePlan
    requesters: dict[int, list[str]]
    nodes: list[int]
    after_round: int
    original_ta: float
    start: State
    recipe: TrainConfig


def _baselines(fed: Federation, evaluator: CentralEvaluator, spec: ModelSpec, record: PhaseRecord,
               run: _BaselineRun) -> None:
    """Each baseline built its own way (server/baselines.py), timed and metered alone, then audited and
    judged like the unlearned model."""
    plan, original, requesters, nodes = run.plan, record.states["original"], run.requesters, run.nodes
    runs: list[tuple[str, Callable[[], Anchor]]] = []
    if plan.federated_retrain and run.after_round > 0:
        runs.append(("federated_retrain", lambda: fedavg_rounds(fed, run.start, run.after_round, nodes)))
    if plan.federated_finetune_rounds > 0:
        runs.append(("federated_finetune",
                     lambda: fedavg_rounds(fed, original, plan.federated_finetune_rounds, nodes)))
    if fed.history.start is not None:
        runs.append(("federaser", lambda: federaser(fed, nodes, calibration_recipe(run.recipe, plan))))
    if plan.pga:
        trainers = [n for n in nodes if n not in requesters]
        # a record of its own: the round's seed and combine rule as the phase's, its client work not the phase's
        scratch = PhaseRecord(run.after_round, PROJECTED_ASCENT, [], record.forgotten_classes)

        def ascend(ascent: UnlearningPlan, state: State) -> dict[str, torch.Tensor]:
            return _unlearning_round(fed, ascent, state, {n: list(ids) for n, ids in requesters.items()}, trainers,
                                     1, scratch, RoundSeconds())

        runs.append(("pga", lambda: pga(fed, original, nodes, plan, run.unlearning, ascend)))
    for name, build in runs:
        began = time.perf_counter()
        with fed.messenger.metered() as traffic:
            anchor = build()
        seconds = time.perf_counter() - began
        record.states[name] = anchor.state
        _control(fed, evaluator, record, name, anchor.state, requesters, run.original_ta, rounds=anchor.rounds,
                 seconds=seconds, bytes_=traffic.total, storage_bytes=anchor.storage_bytes)


def _commit(fed: Federation, record: PhaseRecord, gate: GateResult, model_hash: str,
            requesters: dict[int, list[str]]) -> None:
    """query.commit to the requesters: ledger, receipt and purge happen on each node.

    A node whose reply did not come is asked once more: a node's commit is idempotent for the same
    model, so the repeat only recovers a lost answer. Requests still unanswered are ``unconfirmed``:
    the node may have committed them, and its ledger, not this report, decides."""
    summary = json.dumps({k: v for k, v in asdict(gate).items() if k != "reasons"})
    plan = {
        node: (P.MSG_COMMIT, RecordDict({P.CONFIG: ConfigRecord({
            P.REQUEST_IDS: ids, P.MODEL_HASH_BEFORE: record.model_hash_before,
            P.MODEL_HASH_AFTER: model_hash, P.AUDIT_SUMMARY: summary,
        })}))
        for node, ids in requesters.items()
    }
    replies = fed.messenger.ask(plan, "commit")
    fed.note("query.commit", replies.failures)
    if replies.failures:
        again = fed.messenger.ask({node: plan[node] for node in replies.failures}, "commit-again")
        fed.note("query.commit, asked again", again.failures)
        replies = Replies({**replies.answers, **again.answers}, again.failures)
    problems: dict[int, str] = {}
    for node in sorted(replies.failures):
        record.unconfirmed.extend(requesters[node])
    for node, content in sorted(replies.answers.items()):
        try:
            said = {str(r) for r in P.listed(content.config_records[P.STATUS][P.COMMITTED])}
        except (KeyError, TypeError) as err:
            problems[node] = f"malformed reply ({type(err).__name__}: {str(err)[:120]})"
            record.unconfirmed.extend(requesters[node])
            continue
        # a node's word counts only for the requests it was asked to commit: those passed the gate
        record.committed.extend(r for r in requesters[node] if r in said)
        if unasked := sorted(said - set(requesters[node])):
            problems[node] = f"claimed to commit requests it was not asked to: {unasked[:5]}"
    fed.note("query.commit", problems)
