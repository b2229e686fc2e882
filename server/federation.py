"""The federation as the server sees it, and the exchanges every phase is built from.

A ``Federation`` knows the connected nodes (node id -> partition, learned by
asking ``query.status``: node ids are random) and how to build instructions.
``train_round``, ``collect_updates`` and ``audit`` are the steps; training,
unlearning and the baselines are loops over them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from flwr.serverapp import Grid

from fedunlearn.common import protocol as P
from fedunlearn.common.audit.attacks import ATTACKS
from fedunlearn.common.audit.calibrated import CALIBRATED_ATTACKS
from fedunlearn.common.audit.exemplars import Exemplars, exemplars_record
from fedunlearn.common.audit.gate import GateResult, PooledAudit, audit_problem, leakage_gate, pool_audits
from fedunlearn.common.audit.local import AttackFigures, LocalAudit
from fedunlearn.common.errors import ConfigError, FedUnlearnError
from fedunlearn.common.records import state_arrays
from fedunlearn.common.scenario import Scenario
from fedunlearn.common.training import TrainConfig
from fedunlearn.server.aggregate import State, clip_to_median, fedavg, rejection_reason, update_norm
from fedunlearn.server.messaging import Messenger
from fedunlearn.server.references import ReferenceModels, calibration_content
from fedunlearn.server.update_history import UpdateHistory

__all__ = ["AuditRound", "Federation", "NodeStatus", "Update", "settled_nodes", "wait_for_nodes"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeStatus:
    node_id: int
    partition: int
    num_train: int
    num_holdout: int
    pending: tuple[str, ...]
    pending_kinds: tuple[str, ...]
    pending_samples: int
    pending_counts: tuple[int, ...]
    pending_classes: tuple[int, ...]  # per pending request: its target class, or P.NO_CLASS
    layout: Mapping[str, Any] = field(default_factory=dict)  # how its data was cut (common.nodes.NodeLayout)

    @property
    def forgotten_classes(self) -> frozenset[int]:
        """The classes its pending class requests name."""
        return frozenset(c for c in self.pending_classes if c != P.NO_CLASS)

    def samples_under(self, request_ids: Sequence[str]) -> int:
        """How many samples this node said the named pending requests hold."""
        counts = dict(zip(self.pending, self.pending_counts, strict=True))
        return sum(counts.get(r, 0) for r in request_ids)

    def keeping(self, request_ids: Sequence[str]) -> NodeStatus:
        """This status with only the named pending requests, each with its own kind and count."""
        rows = [row for row in zip(self.pending, self.pending_kinds, self.pending_counts, self.pending_classes,
                                   strict=True) if row[0] in request_ids]
        return replace(self, pending=tuple(r[0] for r in rows), pending_kinds=tuple(r[1] for r in rows),
                       pending_counts=tuple(r[2] for r in rows), pending_samples=sum(r[2] for r in rows),
                       pending_classes=tuple(r[3] for r in rows))


@dataclass(frozen=True)
class AuditRound:
    """One round of audits: the audits that passed the server's checks, by node (only their requests may be
    committed), and why the others were not pooled."""

    audits: dict[int, LocalAudit]
    problems: dict[int, str]

    @property
    def nodes(self) -> tuple[int, ...]:
        return tuple(self.audits)

    @property
    def pooled(self) -> PooledAudit | None:
        return pool_audits(list(self.audits.values())) if self.audits else None


@dataclass(frozen=True)
class Update:
    """A node's reply: ``state`` is its model; an unlearning node also sends ``trained``, its ordinary
    retain-data training of the same global model (None otherwise)."""

    node_id: int
    state: dict[str, torch.Tensor]
    weight: float
    metrics: dict[str, float]
    trained: dict[str, torch.Tensor] | None = None


def wait_for_nodes(grid: Grid, expected: int, timeout: float) -> list[int]:
    """Node ids once ``expected`` nodes are connected (SuperNodes may join late)."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= expected:
            return nodes
        if time.monotonic() > deadline:
            raise FedUnlearnError(f"only {len(nodes)} of {expected} nodes connected within {timeout:.0f} s")
        time.sleep(0.5)


def settled_nodes(grid: Grid, quiet: float = 2.0, timeout: float = 60.0) -> list[int]:
    """Node ids once at least one node is connected and none joined for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    nodes: list[int] = []
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        current = sorted(grid.get_node_ids())
        if current != nodes:
            nodes, stable_since = current, time.monotonic()
        elif nodes and time.monotonic() - stable_since >= quiet:
            return nodes
        time.sleep(0.2)
    if not nodes:
        raise FedUnlearnError(f"no node connected within {timeout:.0f} s")
    return nodes


@dataclass
class Federation:
    messenger: Messenger
    scenario: Scenario
    nodes: list[int]
    failures: list[str] = field(default_factory=list)  # everything that went wrong, for the report
    partitions: dict[int, int] = field(default_factory=dict)  # node id -> partition, from the last status
    statuses: dict[int, NodeStatus] = field(default_factory=dict)  # the last status of each node
    references: ReferenceModels | None = None  # set once the nodes hold their statistics (``calibrate``)
    history: UpdateHistory = field(default_factory=UpdateHistory)  # training updates kept for FedEraser
    # the clipped update norms of the run's last own training round, kept where they are needed: they bound the
    # unlearning steps of a round in which nobody trains ([unlearning].train_beside = false)
    last_training_norms: tuple[float, ...] = ()
    loan: tuple[Exemplars, ArrayRecord] | None = None  # lent to class audits while a phase runs (``lending``)

    def instructions(self, round_: int, **extra: Any) -> ConfigRecord:
        fed = self.scenario.federation
        return ConfigRecord({
            P.ROUND: round_, P.SEED: self.scenario.seed * 100_003 + round_, P.MODEL: fed.model,
            P.RECIPE: json.dumps(asdict(fed.recipe())), P.DEVICE: fed.device, **extra,
        })

    def note(self, what: str, failures: Mapping[int, str]) -> None:
        for node, why in failures.items():
            self.failures.append(f"{what}: node {node}: {why}")

    def status(self) -> dict[int, NodeStatus]:
        """The nodes' statuses; a node whose status is malformed, contradicts itself or claims a partition
        that is not its own sits this round out (noted, its last status forgotten), so nothing it claims
        there can steer a phase."""
        replies = self.messenger.broadcast(self.nodes, P.MSG_STATUS, RecordDict(), "status")
        problems = dict(replies.failures)
        parsed = {}
        for node, content in replies.answers.items():
            status = _node_status(node, content, self.scenario.federation.clients)
            if isinstance(status, str):
                problems[node] = status
                self.statuses.pop(node, None)
            else:
                parsed[node] = status
        statuses = self._claimed(parsed, problems)
        self.note("query.status", problems)
        self.statuses.update(statuses)
        for status in statuses.values():
            _check_layout(status, self.scenario)
        return statuses

    def _claimed(self, statuses: Mapping[int, NodeStatus], problems: dict[int, str]) -> dict[int, NodeStatus]:
        """The statuses whose partition is their node's own: the one it first claimed, held by no other node.
        The gate judges each partition's audit on its own, so a node claiming another's partition would
        replace that node's audit. A node that changes its claim or takes another's sits the round out;
        two new nodes claiming one partition is a deployment mistake and stops the run."""
        fresh = Counter(s.partition for n, s in statuses.items() if n not in self.partitions)
        holders = {p: n for n, p in self.partitions.items()}
        if clashes := sorted(p for p, count in fresh.items() if count > 1 and p not in holders):
            raise FedUnlearnError(f"several nodes claim partition(s) {clashes}; give each node its own node directory")
        kept = {}
        for node, status in sorted(statuses.items()):
            first, holder = self.partitions.get(node), holders.get(status.partition, node)
            if holder != node:
                problems[node] = f"claims partition {status.partition}, which node {holder} holds"
            elif first is not None and first != status.partition:
                problems[node] = f"claims partition {status.partition}, but claimed {first} before"
            else:
                kept[node] = status
                self.partitions[node], holders[status.partition] = status.partition, node
        for node in set(statuses) - set(kept):
            self.statuses.pop(node, None)
        return kept

    def calibrate(self, references: ReferenceModels) -> None:
        """Send the reference models once; each node keeps their statistics on its samples. A node that
        fails here cannot be audited with them, so its requests will fail the gate, not pass it."""
        replies = self.messenger.broadcast(self.nodes, P.MSG_CALIBRATE,
                                           calibration_content(references, self.instructions(0)), "calibrate")
        self.note("evaluate.calibrate", replies.failures)
        for node, content in replies.answers.items():
            digest = content.config_records.get(P.STATUS, ConfigRecord()).get(P.CALIBRATION)
            if digest != references.digest:
                self.failures.append(f"evaluate.calibrate: node {node} kept calibration {str(digest)[:12]!r}, "
                                     f"not {references.digest[:12]}")
        self.references = references

    def collect_updates(self, answers: Mapping[int, RecordDict], current: State, what: str) -> list[Update]:
        """Valid updates only; a reply with wrong shapes or NaN/Inf is rejected and reported."""
        updates = []
        # in partition order, so that the float sums of an aggregate do not depend on who answered first
        for node, content in sorted(answers.items(), key=lambda item: (self.partitions.get(item[0], -1), item[0])):
            try:
                states = {name: record.to_torch_state_dict() for name, record in content.array_records.items()
                          if name in (P.ARRAYS, P.TRAIN_ARRAYS)}
                state = states[P.ARRAYS]
                metrics = {k: float(v) for k, v in content.metric_records[P.METRICS].items()}  # type: ignore[arg-type]
            except (KeyError, TypeError, ValueError) as err:
                self.note(what, {node: f"malformed reply ({err})"})
                continue
            reason = next((f"{name}: {why}" for name, candidate in states.items()
                           if (why := rejection_reason(candidate, current)) is not None), None)
            weight = metrics.get(P.NUM_EXAMPLES, 0.0)
            reason = reason or self._weight_problem(node, weight)
            if reason is not None:
                self.note(what, {node: f"update rejected: {reason}"})
                continue
            updates.append(Update(node, state, weight, metrics, states.get(P.TRAIN_ARRAYS)))
        return updates

    def _weight_problem(self, node: int, weight: float) -> str | None:
        """Why an update's example count cannot weigh it: FedAvg gives a node the share it claims, so the claim
        must be finite and no more than the retain samples its status reported this round."""
        if not math.isfinite(weight) or weight < 0:
            return f"{P.NUM_EXAMPLES} {weight} is not a count"
        status = self.statuses.get(node)
        if status is not None and weight > status.num_train:
            return f"{P.NUM_EXAMPLES} {weight:g} exceeds the {status.num_train} training samples its status reported"
        return None

    def train_updates(self, state: State, round_: int, nodes: Sequence[int] | None = None, *, label: str = "train",
                      recipe: TrainConfig | None = None) -> list[Update]:
        """The nodes' local trainings of ``state`` (the federation's recipe unless given): the valid updates
        with examples to weigh them by; every failure is noted under ``<label> round <round_>``."""
        extra = {} if recipe is None else {P.RECIPE: json.dumps(asdict(recipe))}
        content = RecordDict({P.ARRAYS: state_arrays(state), P.CONFIG: self.instructions(round_, **extra)})
        replies = self.messenger.broadcast(nodes if nodes is not None else self.nodes, P.MSG_TRAIN, content,
                                           f"{label}-{round_}")
        self.note(f"{label} round {round_}", replies.failures)
        return [u for u in self.collect_updates(replies.answers, state, f"{label} round {round_}") if u.weight > 0]

    def train_round(self, state: State, round_: int, nodes: Sequence[int] | None = None, *,
                    keep: bool = False) -> dict[str, torch.Tensor]:
        """One FedAvg round on retain data; the state stays as it was if no valid update arrives. ``keep``:
        a round of the run's own training, whose updates ``history`` stores when FedEraser is on and whose
        norms ``last_training_norms`` keeps when the unlearning rounds have no training of their own."""
        updates = self.train_updates(state, round_, nodes)
        if keep:
            self.history.keep(round_, self.scenario.baselines.federaser_interval, state,
                              {u.node_id: u.state for u in updates})
        if not updates:
            self.failures.append(f"train round {round_}: no valid update; the model was kept")
            return {k: v.clone() for k, v in state.items()}
        clipped = self.clipped(state, [(u.node_id, u.state, u.weight) for u in updates], f"train round {round_}")
        if keep and not self.scenario.unlearning.train_beside:  # only a round without training reads them
            self.last_training_norms = tuple(update_norm(state, s) for s, _ in clipped)
        return fedavg(clipped)

    def clipped(self, current: State, updates: Sequence[tuple[int, State, float]], what: str
                ) -> list[tuple[dict[str, torch.Tensor], float]]:
        """(node, trained state, weight) as FedAvg takes them, each update clipped to
        ``[federation].update_clip`` times the round's median norm; every clipped node is noted."""
        kept, scales = clip_to_median(current, [(state, weight) for _, state, weight in updates],
                                      self.scenario.federation.update_clip)
        for (node, _, _), scale in zip(updates, scales, strict=True):
            if scale < 1.0:
                self.failures.append(f"{what}: node {node}'s training update was {1 / scale:.1f}x the bound "
                                     f"({self.scenario.federation.update_clip:g}x the median); scaled down to it")
        return kept

    @contextmanager
    def lending(self, exemplars: Exemplars | None) -> Iterator[None]:
        """Lend ``exemplars`` (``common.audit.exemplars``) to every audit taken inside the block; their
        wire record is built once for all of those audits."""
        self.loan = None if exemplars is None else (exemplars, exemplars_record(exemplars))
        try:
            yield
        finally:
            self.loan = None

    def audit(self, state: State, requesters: Mapping[int, Sequence[str]], label: str) -> AuditRound:
        """Checked and pooled membership audit of ``state`` by the requesting nodes."""
        return self._audit(lambda ids: self._audit_content(ids, {P.ARRAYS: state_arrays(state)}), requesters, label)

    def audit_artifact(self, model_bytes: bytes, requesters: Mapping[int, Sequence[str]], label: str) -> AuditRound:
        """The same audit of an exported ONNX model: each node runs it with ONNX Runtime."""
        digest = hashlib.sha256(model_bytes).hexdigest()
        return self._audit(lambda ids: self._audit_content(
            ids, {}, **{P.ARTIFACT: model_bytes, P.ARTIFACT_SHA256: digest}), requesters, label)

    @property
    def looks(self) -> int:
        """Every look the gate may take before it publishes: each round of each attempt, and the audit of
        each exported artifact (fp32, and int8 unless it is off) of a candidate that passed."""
        unlearning, artifacts = self.scenario.unlearning, 1 + (self.scenario.export.int8 != "none")
        return unlearning.max_attempts * (unlearning.max_rounds + artifacts)

    def judge(self, audits: AuditRound, test_drop: float) -> GateResult | None:
        """The gate on one round of audits (None when no audit could be pooled). Every look counts:
        the false-alarm rate is split over all of ``looks``."""
        if not audits.audits:
            return None
        by_partition = {f"partition {self.partitions.get(node, node)}": audit for node, audit in audits.audits.items()}
        return leakage_gate(by_partition, test_drop, self.scenario.gate, looks=self.looks)

    def _audit_content(self, ids: list[str], records: dict[str, ArrayRecord], **extra: Any) -> RecordDict:
        if self.references is not None:
            extra[P.CALIBRATION] = self.references.digest
        if self.loan is not None:
            records = {**records, P.EXEMPLARS: self.loan[1]}
        return RecordDict({**records, P.CONFIG: self.instructions(0, **{P.REQUEST_IDS: ids, **extra})})

    def _audit(self, content: Callable[[list[str]], RecordDict], requesters: Mapping[int, Sequence[str]],
               label: str) -> AuditRound:
        plan = {node: (P.MSG_AUDIT, content(list(ids))) for node, ids in requesters.items()}
        replies = self.messenger.ask(plan, f"audit-{label}")
        problems = dict(replies.failures)
        audits: dict[int, LocalAudit] = {}
        for node, reply in sorted(replies.answers.items()):
            audit = _local_audit(reply)
            status = self.statuses.get(node)
            if isinstance(audit, str):
                problems[node] = audit
            elif status is None:
                problems[node] = "sent an audit but never reported its status"
            elif (why := audit_problem(audit, expected_forget=status.samples_under(requesters[node]),
                                       max_holdout=status.num_holdout + (len(self.loan[0]) if self.loan else 0),
                                       required=self.scenario.gate.attacks)) is not None:
                problems[node] = why
            else:
                audits[node] = audit
        self.note(f"audit {label}", {node: f"not pooled: {why}" for node, why in problems.items()})
        return AuditRound(audits, problems)


def _check_layout(status: NodeStatus, scenario: Scenario) -> None:
    """A node cut from the dataset differently from what the scenario says would hold data the server
    believes no client holds (the references' public split) or audit the wrong sets: stop the run."""
    data = scenario.data
    expected = {"dataset": data.dataset, "partitioner": data.partitioner, "holdout_fraction": data.holdout_fraction,
                "train_size": data.train_size, "seed": scenario.seed, "num_partitions": scenario.federation.clients,
                "mislabeled": data.mislabeled_share(status.partition)}
    for key, want in expected.items():
        if key in status.layout and status.layout[key] != want:
            raise ConfigError(
                f"node {status.node_id} was made with {key}={status.layout[key]!r} but the scenario says {want!r} "
                f"([data], [scenario].seed or [federation].clients): re-create the node with `fedunlearn node init` "
                "flags that match the scenario, or fix the scenario")


def _node_status(node: int, content: RecordDict, clients: int) -> NodeStatus | str:
    """A status reply as the server may use it, or why it cannot be (missing keys, wrong types, figures
    that contradict each other)."""
    try:
        record = content.config_records[P.STATUS]
        layout = json.loads(str(record.get(P.LAYOUT, "{}")))
        if not isinstance(layout, dict):
            return "malformed status (its layout is not a JSON object)"
        status = NodeStatus(
            node_id=node, partition=P.whole_number(record[P.PARTITION]), num_train=P.whole_number(record[P.NUM_TRAIN]),
            num_holdout=P.whole_number(record[P.NUM_HOLDOUT]),
            pending=tuple(str(r) for r in P.listed(record[P.PENDING_REQUESTS])),
            pending_kinds=tuple(str(k) for k in P.listed(record[P.PENDING_KINDS])),
            pending_samples=P.whole_number(record[P.PENDING_SAMPLES]),
            pending_counts=tuple(P.whole_number(c) for c in P.listed(record[P.PENDING_COUNTS])),
            pending_classes=tuple(P.whole_number(c) for c in P.listed(record[P.PENDING_CLASSES])),
            layout=layout,
        )
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        return f"malformed status ({type(err).__name__}: {str(err)[:120]})"
    return _status_problem(status, clients) or status


def _status_problem(status: NodeStatus, clients: int) -> str | None:
    """Why a status contradicts itself or the scenario (None if it does not): its per-request lists must
    line up, each request hold at least one sample (the ledger refuses empty ones) and the total be their sum."""
    if not 0 <= status.partition < clients:
        return f"partition {status.partition} is outside 0..{clients - 1}"
    if min(status.num_train, status.num_holdout) < 0:
        return f"negative sizes (train {status.num_train}, hold-out {status.num_holdout})"
    if not len(status.pending) == len(status.pending_kinds) == len(status.pending_counts) == len(
            status.pending_classes):
        return (f"{len(status.pending)} pending requests but {len(status.pending_kinds)} kinds, "
                f"{len(status.pending_counts)} counts and {len(status.pending_classes)} classes")
    if any(c < P.NO_CLASS for c in status.pending_classes):
        return f"a pending request names class {min(status.pending_classes)}"
    if len(set(status.pending)) != len(status.pending):
        return "a pending request is listed twice"
    if any(count < 1 for count in status.pending_counts):
        return f"a pending request holds no samples (counts {list(status.pending_counts)[:10]})"
    if sum(status.pending_counts) != status.pending_samples:
        return f"pending samples {status.pending_samples} are not the sum of its requests' {sum(status.pending_counts)}"
    return None


def _local_audit(reply: RecordDict) -> LocalAudit | str:
    """A reply's figures, or why they cannot be read (missing keys, wrong types); keys of attacks the
    server does not know are ignored."""
    try:
        metrics: Mapping[str, Any] = reply.metric_records[P.METRICS]
        if P.whole_number(metrics.get(P.HOLDOUT_SIZE, 0)) == 0:
            return "holds no non-members to compare its forget set with"
        names = [n for n in (*ATTACKS.names(), *CALIBRATED_ATTACKS.names()) if P.AUC_PREFIX + n in metrics]
        return LocalAudit(
            forget_size=P.whole_number(metrics[P.FORGET_SIZE]), holdout_size=P.whole_number(metrics[P.HOLDOUT_SIZE]),
            forget_accuracy=float(metrics[P.FORGET_ACCURACY]), holdout_accuracy=float(metrics[P.HOLDOUT_ACCURACY]),
            attacks={n: AttackFigures(auc=float(metrics[P.AUC_PREFIX + n]),
                                      tpr_at_1pct_fpr=float(metrics[P.TPR_PREFIX + n])) for n in names},
        )
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        return f"malformed audit ({type(err).__name__}: {str(err)[:120]})"
