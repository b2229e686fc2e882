"""Scripted nodes: a ClientApp whose handlers answer from a few numbers instead of data and training.

The server loop runs for real (``run_federation``, ``Messenger``, the gate), the
replies are made up in microseconds: each node's "training" moves the model half
way towards a fixed target state, its audit reports chance-level attacks on the
forget set its status claimed, and its ledger is a dict. ``ScriptedEvaluator``
scores a state by its distance from that target, so a step that wrecks the model
shows as lost accuracy. Faults are ``InProcessGrid`` hooks, as for real nodes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedunlearn.common import protocol as P
from fedunlearn.common.models import ModelSpec, build_model
from fedunlearn.common.scenario import Scenario
from fedunlearn.server.aggregate import State, update_norm
from fedunlearn.server.federation import Federation
from fedunlearn.server.messaging import Messenger
from fedunlearn.server.run import RunRecord, run_federation
from tests.server.in_process import Fault, InProcessGrid

__all__ = ["SPEC", "FiledRequest", "ScriptedEvaluator", "ScriptedNode", "ScriptedWorld", "assert_only_audited_commits",
           "scripted_nodes", "scripted_run"]

SPEC = ModelSpec("cnn", 1, 8, 10)
FORGET_SIZE = 30  # samples under each scripted request
HOLDOUT_SIZE = 60
TARGET = dict(build_model(SPEC, seed=1).state_dict())  # what every node's training moves towards


def _towards_target(state: State, share: float = 0.5) -> dict[str, torch.Tensor]:
    return {k: v + share * (TARGET[k] - v) if v.is_floating_point() else v.clone() for k, v in state.items()}


@dataclass
class ScriptedNode:
    """A node's ledger as the server can observe it: pending requests (id -> samples) and receipts."""

    partition: int
    num_train: int = 300
    num_holdout: int = 2 * HOLDOUT_SIZE
    pending: dict[str, int] = field(default_factory=dict)
    receipts: dict[str, dict[str, object]] = field(default_factory=dict)  # committed request id -> receipt
    deferrals: dict[str, str] = field(default_factory=dict)  # pending request id -> why the server left it so

    def status(self, message: Message) -> RecordDict:
        return RecordDict({P.STATUS: ConfigRecord({
            P.PARTITION: self.partition, P.NUM_TRAIN: self.num_train, P.NUM_HOLDOUT: self.num_holdout,
            P.PENDING_REQUESTS: list(self.pending), P.PENDING_KINDS: ["sample"] * len(self.pending),
            P.PENDING_SAMPLES: sum(self.pending.values()), P.PENDING_COUNTS: list(self.pending.values()),
            P.PENDING_CLASSES: [P.NO_CLASS] * len(self.pending)})})

    def named(self, config: ConfigRecord) -> list[str]:
        """The pending requests the server named; an unknown or settled one fails, as on a real node."""
        ids = [str(r) for r in config[P.REQUEST_IDS]]  # type: ignore[union-attr]
        unknown = [r for r in ids if r not in self.pending]
        if not ids or unknown:
            raise ValueError(f"request(s) {unknown} are not pending")
        return ids

    def train(self, message: Message) -> RecordDict:
        state = message.content.array_records[P.ARRAYS].to_torch_state_dict()
        return RecordDict({P.ARRAYS: ArrayRecord(torch_state_dict=_towards_target(state)),
                           P.METRICS: MetricRecord({P.NUM_EXAMPLES: self.num_train, P.SECONDS: 0.0})})

    def unlearn(self, message: Message) -> RecordDict:
        config = message.content.config_records[P.CONFIG]
        forget = sum(self.pending[r] for r in self.named(config))
        reply = self.train(message)
        state = message.content.array_records[P.ARRAYS].to_torch_state_dict()
        if config.get(P.TRAIN_BESIDE, True):
            reply[P.TRAIN_ARRAYS] = reply[P.ARRAYS]
        reply[P.ARRAYS] = ArrayRecord(torch_state_dict=_towards_target(state, 0.1))  # a small unlearning step
        reply[P.METRICS] = MetricRecord({P.NUM_EXAMPLES: self.num_train, P.FORGET_SIZE: forget, P.STEPS: 5,
                                         P.SECONDS: 0.0})
        return reply

    def audit(self, message: Message) -> RecordDict:
        forget = sum(self.pending[r] for r in self.named(message.content.config_records[P.CONFIG]))
        metrics: dict[str, float | int] = {P.FORGET_SIZE: forget, P.HOLDOUT_SIZE: HOLDOUT_SIZE,
                                           P.FORGET_ACCURACY: 90.0, P.HOLDOUT_ACCURACY: 90.0}
        for attack in ("loss", "lira", "rmia"):  # chance level: nothing tells the forget set apart
            metrics[P.AUC_PREFIX + attack], metrics[P.TPR_PREFIX + attack] = 0.5, 1.0
        return RecordDict({P.METRICS: MetricRecord(metrics)})

    def commit(self, message: Message) -> RecordDict:
        config = message.content.config_records[P.CONFIG]
        after = str(config[P.MODEL_HASH_AFTER])
        named = [str(r) for r in config[P.REQUEST_IDS]]  # type: ignore[union-attr]
        # a repeat of a commit whose answer was lost is answered, not redone, as in client.handlers.commit
        fresh = [r for r in named if self.receipts.get(r, {}).get("model_hash_after") != after]
        ids = self.named(ConfigRecord({P.REQUEST_IDS: fresh})) if fresh else []
        for request_id in ids:
            self.receipts[request_id] = {"model_hash_after": after,
                                         "num_samples": self.pending.pop(request_id),
                                         "audit": json.loads(str(config.get(P.AUDIT_SUMMARY, "{}")))}
        return RecordDict({P.STATUS: ConfigRecord({P.COMMITTED: named})})

    def defer(self, message: Message) -> RecordDict:
        config = message.content.config_records[P.CONFIG]
        noted = [r for r in (str(r) for r in config[P.REQUEST_IDS]) if r in self.pending]  # type: ignore[union-attr]
        self.deferrals.update(dict.fromkeys(noted, str(config[P.DEFERRAL])))
        return RecordDict({P.STATUS: ConfigRecord({P.DEFERRED: noted})})


def scripted_client_app(nodes: dict[int, ScriptedNode]) -> ClientApp:
    """A ClientApp registered like ``client.app``'s, each handler answered by the addressed scripted node."""
    app = ClientApp()

    def reply(action: str) -> Callable[[Message, Context], Message]:
        def handle(message: Message, context: Context) -> Message:
            node = nodes[context.node_id]
            return Message(getattr(node, action)(message), reply_to=message)
        return handle

    app.query(P.ACTION_STATUS)(reply("status"))
    app.train()(reply("train"))
    app.train(P.ACTION_UNLEARN)(reply("unlearn"))
    app.evaluate(P.ACTION_AUDIT)(reply("audit"))
    app.query(P.ACTION_COMMIT)(reply("commit"))
    app.query(P.ACTION_DEFER)(reply("defer"))
    return app


@dataclass(frozen=True)
class FiledRequest:
    request_id: str
    partition: int
    node_id: int


@dataclass
class ScriptedWorld:
    """Files the scenario's requests (one partition each) on the scripted nodes after their round, as
    ``SimulatedWorld`` does."""

    scenario: Scenario
    nodes: dict[int, ScriptedNode]
    filed: list[FiledRequest] = field(default_factory=list)

    def file_due(self, completed_round: int) -> list[FiledRequest]:
        new = []
        for scheduled in self.scenario.requests:
            if scheduled.round != completed_round:
                continue
            node_id, node = next((i, n) for i, n in self.nodes.items() if n.partition == int(scheduled.partition))
            request_id = f"req-{node.partition}-{completed_round}-{len(self.filed) + len(new)}"
            node.pending[request_id] = FORGET_SIZE
            new.append(FiledRequest(request_id, node.partition, node_id))
        self.filed.extend(new)
        return new

    def node(self, partition: int) -> ScriptedNode:
        return next(n for n in self.nodes.values() if n.partition == partition)


@dataclass
class ScriptedEvaluator:
    """Test accuracy (percent) as closeness to the nodes' target: 100 there, 0 at the initial model's
    distance or beyond. The server takes every unlearning step in full, so only the update bound keeps
    a huge step small."""

    initial: State = field(default_factory=lambda: build_model(SPEC, seed=0).state_dict())

    def ta(self, state: State, classes: Sequence[int] = ()) -> float:
        if not all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point()):
            return 0.0
        return max(0.0, 100.0 * (1.0 - update_norm(TARGET, state) / update_norm(TARGET, self.initial)))


def scripted_nodes(clients: int) -> dict[int, ScriptedNode]:
    """``clients`` fresh scripted nodes, ids 100, 101, ... by partition."""
    return {100 + i: ScriptedNode(partition=i) for i in range(clients)}


def scripted_run(scenario: Scenario, faults: dict[int, Fault] | None = None,
                 nodes: dict[int, ScriptedNode] | None = None) -> tuple[RunRecord, ScriptedWorld, InProcessGrid]:
    """The server loop over scripted nodes: ``nodes`` as a previous run left them (a restarted server),
    or ``scenario.federation.clients`` fresh ones."""
    nodes = nodes if nodes is not None else scripted_nodes(scenario.federation.clients)
    world = ScriptedWorld(scenario, nodes)
    grid = InProcessGrid(scripted_client_app(nodes), {n: Path(f"scripted-{n}") for n in nodes},  # type: ignore[arg-type]
                         faults or {})
    fed = Federation(Messenger(grid, timeout=60), scenario, grid.get_node_ids())  # type: ignore[arg-type]
    record = run_federation(fed, ScriptedEvaluator(), SPEC, after_round=world.file_due)  # type: ignore[arg-type]
    return record, world, grid


def assert_only_audited_commits(record: RunRecord, nodes: dict[int, ScriptedNode]) -> None:
    """What the run claims committed is committed on its node under that phase's published model, and
    every receipt on any node cites a passing gate."""
    receipts = {request: receipt for node in nodes.values() for request, receipt in node.receipts.items()}
    for phase in record.phases:
        for request in phase.committed:
            assert phase.passed and receipts[request]["model_hash_after"] == phase.model_hash
    for request, receipt in receipts.items():
        assert receipt["audit"]["passed"] is True, f"{request} was committed without a passing audit"  # type: ignore[index]
