"""Nodes that lie to the server, through the whole server loop with scripted nodes: in ``query.status``,
consistently in their status and audit, in their commit reply, and with an update that costs accuracy.
Whatever they say, only requests whose audit was pooled into a passing gate are committed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from flwr.app import ArrayRecord, RecordDict

from fedunlearn.common import protocol as P
from tests.server.faults import failing, huge, leaky_audit, replacing_arrays, rewriting, with_fields
from tests.server.in_process import tiny_scenario
from tests.server.scripted import TARGET, assert_only_audited_commits, scripted_run

Fields = dict[str, Any]


def _ghost_request(fields: Fields) -> Fields:
    return {**fields, P.PENDING_REQUESTS: [*fields[P.PENDING_REQUESTS], "ghost"],
            P.PENDING_KINDS: [*fields[P.PENDING_KINDS], "sample"], P.PENDING_COUNTS: [*fields[P.PENDING_COUNTS], 0],
            P.PENDING_CLASSES: [*fields[P.PENDING_CLASSES], P.NO_CLASS]}


def _request_of_class(target: int) -> Callable[[Fields], Fields]:
    def lie(fields: Fields) -> Fields:
        return {**fields, P.PENDING_REQUESTS: [*fields[P.PENDING_REQUESTS], "made-up"],
                P.PENDING_KINDS: [*fields[P.PENDING_KINDS], "class"],
                P.PENDING_COUNTS: [*fields[P.PENDING_COUNTS], 5], P.PENDING_SAMPLES: fields[P.PENDING_SAMPLES] + 5,
                P.PENDING_CLASSES: [*fields[P.PENDING_CLASSES], target]}
    return lie


@pytest.mark.parametrize(("lie", "words"), [
    (lambda f: {**f, P.PENDING_SAMPLES: f[P.PENDING_SAMPLES] + 1}, "not the sum"),
    (lambda f: {**f, P.PENDING_COUNTS: [*f[P.PENDING_COUNTS], 5]}, "pending requests but"),
    (lambda f: {**f, P.PENDING_CLASSES: [*f[P.PENDING_CLASSES], 4]}, "pending requests but"),
    (_request_of_class(-7), "names class -7"),
    (_ghost_request, "holds no samples"),
    (lambda f: {**f, P.PARTITION: 7}, "partition 7 is outside"),
    (lambda f: {**f, P.NUM_HOLDOUT: -1}, "negative sizes"),
    (lambda f: {**f, P.NUM_TRAIN: "many"}, "malformed status (ValueError"),
    (lambda f: {k: v for k, v in f.items() if k != P.PENDING_COUNTS}, "malformed status (KeyError"),
])
def test_a_status_that_contradicts_itself_keeps_its_node_out_of_the_round(
    lie: Callable[[Fields], Fields], words: str,
) -> None:
    record, world, grid = scripted_run(tiny_scenario(), {100: rewriting({P.MSG_STATUS: with_fields(P.STATUS, lie)})})
    assert sum(f.startswith("query.status: node 100") and words in f for f in record.failures) == 4  # every round
    assert {m.metadata.message_type for m in grid.sent if m.metadata.dst_node_id == 100} == {P.MSG_STATUS}
    liar, honest = world.filed[0].request_id, world.filed[1].request_id
    assert liar in world.node(0).pending and honest in world.node(1).receipts
    assert len(record.accuracy) == 4  # the run went on without it
    assert_only_audited_commits(record, world.nodes)


def test_a_status_that_inflates_a_forget_set_gets_its_audit_refused() -> None:
    """A node may claim any count; its audit must then speak for that many samples or not be pooled."""
    def inflate(fields: Fields) -> Fields:
        return {**fields, P.PENDING_COUNTS: [c * 1000 for c in fields[P.PENDING_COUNTS]],
                P.PENDING_SAMPLES: fields[P.PENDING_SAMPLES] * 1000}

    record, world, _ = scripted_run(tiny_scenario(), {100: rewriting({P.MSG_STATUS: with_fields(P.STATUS, inflate)})})
    assert all(p.gate_nodes in ((101,), ()) for p in record.phases)
    assert any("node 100" in f and "disagrees with the 30000 samples its status reported" in f for f in record.failures)
    assert world.filed[0].request_id in world.node(0).pending
    assert world.filed[1].request_id in world.node(1).receipts
    assert_only_audited_commits(record, world.nodes)


def test_a_consistent_liar_cannot_dilute_another_clients_leak() -> None:
    """Node 100 claims a forget set 10,000 times its size in its status and its audit alike: the server
    cannot tell. It swamps the pool, but node 101's own audit is judged on its own and its leak fails the gate."""
    scale = 10_000

    def status(fields: Fields) -> Fields:
        return {**fields, P.PENDING_COUNTS: [c * scale for c in fields[P.PENDING_COUNTS]],
                P.PENDING_SAMPLES: fields[P.PENDING_SAMPLES] * scale}

    def audit(fields: Fields) -> Fields:
        return {**fields, P.FORGET_SIZE: fields[P.FORGET_SIZE] * scale}

    liar = rewriting({P.MSG_STATUS: with_fields(P.STATUS, status), P.MSG_AUDIT: with_fields(P.METRICS, audit)})
    record, world, grid = scripted_run(tiny_scenario(), {100: liar, 101: leaky_audit})
    first = record.phases[0].gate_history[0]
    assert record.phases[0].gate_nodes == (100, 101)  # the liar's figures pass every check
    assert first.forget_auc is not None and abs(first.forget_auc - 0.5) < 0.01  # the pool sees nothing
    assert not first.passed and any(r.startswith("partition 1:") for r in first.reasons)
    assert not any(p.committed for p in record.phases)
    assert not any(m.metadata.message_type == P.MSG_COMMIT for m in grid.sent)
    assert all(f.request_id in world.node(f.partition).pending for f in world.filed)


def test_every_request_a_failed_gate_leaves_pending_says_why_in_its_nodes_ledger() -> None:
    record, world, grid = scripted_run(tiny_scenario(), {101: leaky_audit})
    assert not any(p.passed for p in record.phases)
    for filed in world.filed:
        why = world.node(filed.partition).deferrals[filed.request_id]  # the last phase's word: after round 3
        assert why.startswith("after round 3 the leakage gate did not pass:") and "partition 1: lira" in why, why
    assert {m.metadata.dst_node_id for m in grid.sent if m.metadata.message_type == P.MSG_DEFER} == {100, 101}


def test_a_request_left_out_of_a_passing_gate_says_why_in_its_nodes_ledger() -> None:
    record, world, grid = scripted_run(tiny_scenario(), {100: failing(P.MSG_AUDIT)})
    assert record.phases[0].passed and record.phases[0].gate_nodes == (101,)
    told = [str(m.content.config_records[P.CONFIG][P.DEFERRAL]) for m in grid.sent
            if m.metadata.message_type == P.MSG_DEFER and m.metadata.dst_node_id == 100]
    assert "after round 2 this node's unlearning or audit was not pooled into the passing gate" in told[0]
    assert told[-1] == "after round 3 the leakage gate did not pass: no audit could be pooled"  # alone next time
    left, done = world.filed[0].request_id, world.filed[1].request_id
    assert world.node(0).deferrals[left] == told[-1]
    assert done in world.node(1).receipts and done not in world.node(1).deferrals


def test_a_clean_node_claiming_a_leaking_nodes_partition_cannot_hide_its_leak() -> None:
    """From its second status on node 101 says it holds node 100's partition. Its clean audit would have
    replaced node 100's leaking one in the gate, and both requests were committed; now it sits out."""
    statuses: list[int] = []

    def take_partition_0(fields: Fields) -> Fields:
        statuses.append(1)
        return fields if len(statuses) == 1 else {**fields, P.PARTITION: 0}

    liar = rewriting({P.MSG_STATUS: with_fields(P.STATUS, take_partition_0)})
    record, world, grid = scripted_run(tiny_scenario(), {100: leaky_audit, 101: liar})
    assert not any(p.passed or p.committed for p in record.phases)
    assert not any(m.metadata.message_type == P.MSG_COMMIT for m in grid.sent)
    assert all(f.request_id in world.node(f.partition).pending for f in world.filed)
    assert sum("node 101: claims partition 0, which node 100 holds" in f for f in record.failures) == 3


@pytest.mark.parametrize(("claim", "words"), [
    (lambda f: {**f, P.COMMITTED: [*f[P.COMMITTED], "req-1-2-1", "made-up"]}, "not asked to: ['made-up', 'req-1-2-1']"),
    (lambda f: {}, "malformed reply (KeyError"),
])
def test_a_commit_reply_counts_only_for_the_requests_the_node_was_asked_to_commit(
    claim: Callable[[Fields], Fields], words: str,
) -> None:
    """Node 100 claims more than it was asked (another node's request, an invented one), or sends nothing
    readable: the run never lists a request as committed on such a word."""
    scenario = tiny_scenario()
    record, world, _ = scripted_run(scenario, {100: rewriting({P.MSG_COMMIT: with_fields(P.STATUS, claim)})})
    committed = [r for p in record.phases for r in p.committed]
    assert "made-up" not in committed and committed.count("req-1-2-1") <= 1
    assert any(f.startswith("query.commit: node 100") and words in f for f in record.failures)
    assert world.filed[1].request_id == "req-1-2-1"  # the other node's request the liar claimed
    assert_only_audited_commits(record, world.nodes)


def _away_from_target(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An unlearning reply that moves the model away from what every node trains towards."""
    return {k: v + 3.0 * (v - TARGET[k]) if v.is_floating_point() else v for k, v in state.items()}


def test_an_unlearning_update_that_costs_accuracy_fails_the_gate_on_utility() -> None:
    """A finite update near the norm bound that hurts everyone's accuracy: the gate's test-accuracy check
    catches it, no candidate is published and nothing is committed on it. The honest requester's request
    waits too: a hostile requester can hold up a phase (the safe direction), not pass it."""
    record, world, _ = scripted_run(tiny_scenario(), {100: replacing_arrays(P.MSG_UNLEARN, _away_from_target)})
    assert len(record.phases) == 2
    for phase in record.phases:
        first = phase.gate_history[0]
        assert not first.passed and not first.leaked
        assert any("test accuracy dropped" in r for r in first.reasons)
        assert phase.round_kinds == ["unlearn", "repair"]  # trained back, then judged again
        assert phase.model_hash is None and not phase.committed
    assert all(f.request_id in world.node(f.partition).pending for f in world.filed)
    assert record.final_ta > 80.0  # training went on from the last published model


def test_a_requester_cannot_loosen_its_own_bound_with_a_huge_training_half() -> None:
    """The unlearning bound is relative to the round's largest training update, and a requester sends a
    training half too; that half is first clipped to a multiple of the round's median, so making it huge
    neither lifts the bound nor lands in FedAvg in full."""
    def both_huge(content: RecordDict) -> RecordDict:
        changed = content.copy()
        for name in (P.ARRAYS, P.TRAIN_ARRAYS):
            changed[name] = ArrayRecord(torch_state_dict=huge(content[name].to_torch_state_dict()))  # type: ignore[union-attr]
        return changed

    record, world, _ = scripted_run(tiny_scenario(), {100: rewriting({P.MSG_UNLEARN: both_huge})})
    for phase in record.phases:
        scales = [w.update_scale for w in phase.client_work if w.partition == 0]
        assert scales and all(s < 1e-3 for s in scales)  # the bound held
    assert any(f.startswith("unlearning round 1: node 100's training update was") for f in record.failures)
    assert_only_audited_commits(record, world.nodes)
    assert record.final_ta > 80.0


def test_an_unlearning_step_with_no_training_update_to_bound_it_is_not_applied() -> None:
    """The bound is a multiple of the round's largest training update. With none (the requesters leave out
    their training halves, the only other node's training fails) it used to be no bound at all."""
    def without_training_half(content: RecordDict) -> RecordDict:
        return RecordDict({name: record for name, record in content.items() if name != P.TRAIN_ARRAYS})

    drop_half = rewriting({P.MSG_UNLEARN: without_training_half})
    record, _, _ = scripted_run(tiny_scenario(baselines=False),
                                {100: drop_half, 101: drop_half, 102: failing(P.MSG_TRAIN)})
    work = [w for phase in record.phases for w in phase.client_work]
    assert work and all(w.update_scale == 0.0 for w in work)
    assert any("node 100's unlearning update was not applied: no training update" in f for f in record.failures)


@pytest.mark.parametrize("clip", [3.0, 0.0])
def test_a_huge_finite_training_update_is_clipped_to_the_rounds_median(clip: float) -> None:
    """FedAvg alone gives a node that sends a huge, finite update a third of it: the model is ruined.
    Clipped to 3x the round's median norm, it slows training but cannot take it anywhere."""
    record, _, _ = scripted_run(tiny_scenario(with_requests=False, update_clip=clip),
                                {100: replacing_arrays(P.MSG_TRAIN, huge)})
    clipped = [f for f in record.failures if "node 100's training update was" in f]
    if clip:
        assert len(clipped) == 4 and record.final_ta > 40.0  # an honest run reaches about 94
    else:
        assert not clipped and record.final_ta < 5.0


def test_an_update_claiming_more_examples_than_its_status_is_not_used() -> None:
    """FedAvg weighs a node by the examples it claims: claiming a million takes the round over."""
    def claim_million(fields: Fields) -> Fields:
        return {**fields, P.NUM_EXAMPLES: 1e6}

    record, _, _ = scripted_run(tiny_scenario(with_requests=False),
                                {100: rewriting({P.MSG_TRAIN: with_fields(P.METRICS, claim_million)})})
    assert sum("node 100: update rejected: num-examples 1e+06 exceeds" in f for f in record.failures) == 4
    assert record.final_ta > 80.0
