"""The server's handling of audit replies, with fake replies and no client: nothing a client sends can
make the gate pass, and only audits that were pooled count."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from fedunlearn.common import protocol as P
from fedunlearn.common.errors import ConfigError, FedUnlearnError
from fedunlearn.common.scenario import parse_scenario
from fedunlearn.server.federation import Federation, NodeStatus
from fedunlearn.server.messaging import Replies

HONEST: dict[str, float] = {
    P.FORGET_SIZE: 40, P.HOLDOUT_SIZE: 60, P.FORGET_ACCURACY: 90.0, P.HOLDOUT_ACCURACY: 90.0,
    **{P.AUC_PREFIX + a: 0.5 for a in ("loss", "lira", "rmia")},
    **{P.TPR_PREFIX + a: 1.0 for a in ("loss", "lira", "rmia")},
}


@dataclass
class FakeMessenger:
    """Answers every message with the metrics set per node; a node set to a string fails with it."""

    replies: Mapping[int, Mapping[str, Any] | str]
    asked: list[dict[int, tuple[str, RecordDict]]] = field(default_factory=list)

    def ask(self, plan: Mapping[int, tuple[str, RecordDict]], group: str) -> Replies:
        self.asked.append(dict(plan))
        out = Replies()
        for node in plan:
            reply = self.replies[node]
            if isinstance(reply, str):
                out.failures[node] = reply
            else:
                out.answers[node] = RecordDict({P.METRICS: MetricRecord(dict(reply))})  # type: ignore[arg-type]
        return out


def _status(node: int, forget: int = 40, holdout: int = 200) -> NodeStatus:
    return NodeStatus(node_id=node, partition=node - 100, num_train=500, num_holdout=holdout,
                      pending=(f"req-{node}",), pending_kinds=("sample",), pending_samples=forget,
                      pending_counts=(forget,), pending_classes=(P.NO_CLASS,))


def _federation(replies: Mapping[int, Mapping[str, Any] | str]) -> Federation:
    scenario = parse_scenario({"scenario": {"name": "checks"}, "data": {"train_size": 900}})
    fed = Federation(FakeMessenger(replies), scenario, sorted(replies))  # type: ignore[arg-type]
    fed.statuses = {node: _status(node) for node in replies}
    return fed


REQUESTERS = {100: ["req-100"], 101: ["req-101"]}


def _audit(replies: Mapping[int, Mapping[str, Any] | str]) -> tuple[Federation, Any]:
    fed = _federation(replies)
    return fed, fed.audit({}, REQUESTERS, "t")


def test_honest_audits_are_pooled() -> None:
    fed, audits = _audit({100: HONEST, 101: HONEST})
    assert audits.nodes == (100, 101) and not audits.problems
    gate = fed.judge(audits, 0.0)
    assert gate is not None and gate.passed and gate.forget_size == 80


def test_every_look_counts_the_exported_artifacts_audits_too() -> None:
    fed, audits = _audit({100: HONEST, 101: HONEST})
    gate = fed.judge(audits, 0.0)
    assert gate is not None and gate.looks == fed.looks == 2 * (3 + 2)  # attempts x (rounds + fp32, int8)
    fp32_only = parse_scenario({"scenario": {"name": "checks"}, "export": {"int8": "none"},
                                "unlearning": {"max_rounds": 4, "max_attempts": 1}})
    assert Federation(FakeMessenger({}), fp32_only, []).looks == 4 + 1  # type: ignore[arg-type]


@pytest.mark.parametrize(("lie", "words"), [
    ({P.AUC_PREFIX + "lira": math.nan}, "lira AUC nan"),
    ({P.AUC_PREFIX + "rmia": 0.1, P.AUC_PREFIX + "lira": 7.0}, "AUC 7.0"),
    ({P.FORGET_SIZE: 10**6}, "forget-size 1000000 disagrees"),
    ({P.FORGET_SIZE: 0}, "forget-size 0"),
    ({P.FORGET_SIZE: 40.7}, "whole number, got 40.7"),  # int() would have made it the 40 the status claims
    ({P.HOLDOUT_SIZE: 199.5}, "whole number, got 199.5"),
    ({P.HOLDOUT_SIZE: 10**6}, "holdout-size"),
    ({P.FORGET_ACCURACY: math.inf}, "forget-accuracy"),
    ({P.TPR_PREFIX + "rmia": -5.0}, "rmia TPR"),
])
def test_a_lying_client_is_not_pooled_and_the_honest_one_decides(lie: dict[str, float], words: str) -> None:
    leaky = {**HONEST, **{k: 0.9 for k in HONEST if k.startswith(P.AUC_PREFIX)}}  # the honest one leaks
    fed, audits = _audit({100: {**HONEST, **lie}, 101: leaky})
    assert audits.nodes == (101,) and words in audits.problems[100]
    gate = fed.judge(audits, 0.0)
    assert gate is not None and not gate.passed and gate.forget_size == 40
    assert any("node 100" in f and words in f for f in fed.failures)


def test_leaving_out_an_attack_is_that_clients_failure_not_everyones_loss_of_the_attack() -> None:
    partial = {k: v for k, v in HONEST.items() if not k.endswith("rmia")}
    _, audits = _audit({100: partial, 101: HONEST})
    assert audits.nodes == (101,) and "no figures for attack(s) rmia" in audits.problems[100]
    assert audits.pooled is not None and {"lira", "rmia"} <= set(audits.pooled.attacks)


def test_leaving_out_the_loss_attack_or_a_size_is_no_crash() -> None:
    without_loss = {k: v for k, v in HONEST.items() if not k.endswith("-loss")}
    without_size = {k: v for k, v in HONEST.items() if k != P.FORGET_SIZE}
    fed, audits = _audit({100: without_loss, 101: without_size})
    assert audits.nodes == (100,) and "malformed audit" in audits.problems[101]
    assert fed.judge(audits, 0.0) is not None


def test_nothing_poolable_means_no_verdict_not_a_pass() -> None:
    zero = {**HONEST, P.FORGET_SIZE: 0}
    fed, audits = _audit({100: zero, 101: "error reply (2): ClientApp crashed"})
    assert audits.pooled is None and audits.nodes == ()
    assert fed.judge(audits, 0.0) is None
    assert "crashed" in audits.problems[101]


def test_an_empty_hold_out_is_not_pooled() -> None:
    _, audits = _audit({100: {P.FORGET_SIZE: 40, P.HOLDOUT_SIZE: 0}, 101: HONEST})
    assert audits.nodes == (101,) and "no non-members" in audits.problems[100]


def test_a_node_that_never_reported_its_status_is_not_pooled() -> None:
    fed = _federation({100: HONEST, 101: HONEST})
    del fed.statuses[100]
    audits = fed.audit({}, REQUESTERS, "t")
    assert audits.nodes == (101,) and "never reported its status" in audits.problems[100]


def test_a_claimed_variance_changes_nothing() -> None:
    """Old clients sent their own AUC variance; a huge one used to widen the tolerance until 0.9 passed."""
    leaky = {**HONEST, **{k: 0.9 for k in HONEST if k.startswith(P.AUC_PREFIX)}, "auc-var-lira": 1.0}
    fed, audits = _audit({100: leaky, 101: leaky})
    gate = fed.judge(audits, 0.0)
    assert gate is not None and not gate.passed and gate.tolerance is not None and gate.tolerance < 0.2


def test_a_node_cut_differently_from_the_scenario_stops_the_run() -> None:
    fed = _federation({100: HONEST})
    layout = {"dataset": "digits", "partitioner": "dirichlet:0.5", "holdout_fraction": 0.2, "train_size": None,
              "seed": 0, "num_partitions": 5, "partition": 0}
    status = RecordDict({P.STATUS: ConfigRecord({
        P.PARTITION: 0, P.NUM_TRAIN: 10, P.NUM_HOLDOUT: 5, P.PENDING_REQUESTS: [], P.PENDING_KINDS: [],
        P.PENDING_SAMPLES: 0, P.PENDING_COUNTS: [], P.PENDING_CLASSES: [], P.LAYOUT: json.dumps(layout)})})
    fed.messenger = StatusMessenger(status)  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="train_size=None but the scenario says 900"):
        fed.status()
    fed.messenger = StatusMessenger(RecordDict({P.STATUS: ConfigRecord({
        **status.config_records[P.STATUS], P.LAYOUT: json.dumps({**layout, "train_size": 900})})}))  # type: ignore[assignment]
    assert fed.status()[100].layout["train_size"] == 900


@dataclass
class StatusMessenger:
    reply: RecordDict

    def broadcast(self, nodes: list[int], kind: str, content: RecordDict, group: str) -> Replies:
        return Replies(answers={node: self.reply for node in nodes})


@dataclass
class ClaimMessenger:
    """Each node's status claims the partition set for it; nothing is pending."""

    claims: dict[int, int]

    def broadcast(self, nodes: list[int], kind: str, content: RecordDict, group: str) -> Replies:
        return Replies(answers={node: RecordDict({P.STATUS: ConfigRecord({
            P.PARTITION: self.claims[node], P.NUM_TRAIN: 10, P.NUM_HOLDOUT: 5, P.PENDING_REQUESTS: [],
            P.PENDING_KINDS: [], P.PENDING_SAMPLES: 0, P.PENDING_COUNTS: [], P.PENDING_CLASSES: []})})
            for node in nodes})


def _claims_over_rounds(*rounds: dict[int, int]) -> tuple[Federation, list[dict[int, NodeStatus]]]:
    fed = _federation({100: HONEST, 101: HONEST})
    seen = []
    for claims in rounds:
        fed.messenger = ClaimMessenger(claims)  # type: ignore[assignment]
        seen.append(fed.status())
    return fed, seen


def test_a_node_claiming_another_nodes_partition_sits_out_so_its_audit_cannot_replace_that_nodes() -> None:
    """The gate judges each partition's audit on its own: two audits under one partition would keep one,
    and a clean liar's audit would hide a leaking node's (the leak passed and both were committed)."""
    fed, (first, second) = _claims_over_rounds({100: 0, 101: 1}, {100: 0, 101: 0})
    assert set(first) == {100, 101} and set(second) == {100}
    assert fed.partitions == {100: 0, 101: 1} and 101 not in fed.statuses
    assert "query.status: node 101: claims partition 0, which node 100 holds" in fed.failures


def test_a_node_that_changes_its_partition_sits_out() -> None:
    fed, (_, second) = _claims_over_rounds({100: 0, 101: 1}, {100: 0, 101: 2})
    assert set(second) == {100} and "query.status: node 101: claims partition 2, but claimed 1 before" in fed.failures


def test_two_new_nodes_claiming_one_partition_stop_the_run() -> None:
    with pytest.raises(FedUnlearnError, match=r"several nodes claim partition\(s\) \[0\]"):
        _claims_over_rounds({100: 0, 101: 0})


def test_a_status_narrowed_to_some_requests_keeps_each_ones_own_count() -> None:
    """The run drops requests that ran out of attempts; the rest must keep their own counts, or an honest
    audit of them would disagree with the status and never be pooled."""
    status = NodeStatus(node_id=100, partition=0, num_train=500, num_holdout=200, pending=("old", "new"),
                        pending_kinds=("class", "sample"), pending_samples=50, pending_counts=(10, 40),
                        pending_classes=(3, P.NO_CLASS))
    assert status.forgotten_classes == {3}
    narrowed = status.keeping(["new"])
    assert (narrowed.pending, narrowed.pending_kinds, narrowed.pending_counts) == (("new",), ("sample",), (40,))
    assert narrowed.pending_classes == (P.NO_CLASS,) and not narrowed.forgotten_classes  # class 3 left with "old"
    assert narrowed.samples_under(["new"]) == narrowed.pending_samples == 40
