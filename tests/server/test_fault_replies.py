"""The server loop's fault handling with fake replies: scripted nodes, the same faults as
test_federation.py's end-to-end runs, the same checks on what the server does with them.

Each test runs the tiny scenario's whole round plan (status, training, the unlearning
phase with its gate, baselines and commit) in well under a second; the real ClientApps
and their training are test_federation.py's (marked slow)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fedunlearn.common import protocol as P
from tests.server.faults import (
    ServerDied,
    failing,
    failing_once,
    huge,
    leaky_audit,
    lost_reply,
    lost_reply_once,
    nan,
    replacing_arrays,
    reshaped,
    server_dies_at,
    silent,
)
from tests.server.in_process import tiny_scenario
from tests.server.scripted import assert_only_audited_commits, scripted_nodes, scripted_run


def _finite(state: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


def test_honest_scripted_nodes_commit_every_request() -> None:
    """The baseline the faults below depart from: every request passes the gate and is committed."""
    record, world, _ = scripted_run(tiny_scenario())
    [phase] = record.phases
    assert phase.passed and sorted(phase.committed) == sorted(f.request_id for f in world.filed)
    assert len(world.filed) == 2 and not record.failures
    for filed in world.filed:
        node = world.nodes[filed.node_id]
        assert filed.request_id not in node.pending
        assert node.receipts[filed.request_id]["model_hash_after"] == phase.model_hash
    assert len(record.accuracy) == 4 and record.final_ta > 80.0


def test_a_requester_crashing_during_unlearning_keeps_its_request_pending() -> None:
    record, world, _ = scripted_run(tiny_scenario(), {100: failing(P.MSG_UNLEARN)})
    crashed, fine = world.filed[0], world.filed[1]
    assert crashed.request_id in world.node(0).pending and not world.node(0).receipts  # nothing purged
    assert fine.request_id in world.node(1).receipts
    assert any("node 100" in f and "crashed" in f for f in record.failures)
    assert len(record.accuracy) == world.scenario.federation.rounds  # the run went on to the end


@pytest.mark.parametrize(("corrupt", "why"), [(nan, "NaN or Inf"), (reshaped, "has shape")])
def test_bad_updates_are_rejected_and_reported(corrupt: Any, why: str) -> None:
    record, _, _ = scripted_run(tiny_scenario(with_requests=False, rounds=2),
                                {101: replacing_arrays(P.MSG_TRAIN, corrupt)})
    assert sum("node 101" in f and why in f for f in record.failures) == 2  # once per round
    assert _finite(record.final_state)


def test_a_requester_whose_training_half_is_corrupt_is_rejected_and_its_request_stays_pending() -> None:
    record, world, _ = scripted_run(tiny_scenario(), {100: replacing_arrays(P.MSG_UNLEARN, nan, P.TRAIN_ARRAYS)})
    assert any("node 100" in f and P.TRAIN_ARRAYS in f and "NaN or Inf" in f for f in record.failures)
    assert world.filed[0].request_id in world.node(0).pending
    assert world.filed[1].request_id in world.node(1).receipts
    assert _finite(record.final_state)


def test_a_silent_node_is_reported_and_the_run_goes_on() -> None:
    record, _, _ = scripted_run(tiny_scenario(with_requests=False, rounds=2), {102: silent})
    assert any("node 102" in f and "no reply" in f for f in record.failures)
    assert len(record.accuracy) == 2


def test_a_failing_gate_publishes_and_commits_nothing() -> None:
    record, world, grid = scripted_run(tiny_scenario(), {100: leaky_audit, 101: leaky_audit})
    phase = record.phases[0]
    assert not phase.passed and phase.model_hash is None and not phase.committed
    assert "attack AUC" in " ".join(phase.gate.reasons if phase.gate else ())
    for filed in world.filed:
        assert filed.request_id in world.node(filed.partition).pending
    assert not any(m.metadata.message_type == P.MSG_COMMIT for m in grid.sent)


def test_a_requester_whose_audit_crashes_is_not_committed_and_the_audited_one_is() -> None:
    record, world, _ = scripted_run(tiny_scenario(), {100: failing(P.MSG_AUDIT)})
    crashed, audited = world.filed[0], world.filed[1]
    phase = record.phases[0]
    assert phase.gate_nodes == (101,)
    assert all(not p.gate_nodes for p in record.phases[1:])  # node 100 alone: nothing to pool, nothing passes
    assert crashed.request_id in world.node(0).pending and not world.node(0).receipts
    assert phase.passed  # scripted audits are at chance level: the audited requester passes alone
    receipt = world.node(1).receipts[audited.request_id]
    assert receipt["audit"]["forget_size"] == receipt["num_samples"]  # type: ignore[index]
    assert any("node 100" in f and "not pooled" in f for f in record.failures)


def test_a_huge_finite_unlearning_update_is_bounded_and_cannot_wreck_the_model() -> None:
    record, _, _ = scripted_run(tiny_scenario(), {100: replacing_arrays(P.MSG_UNLEARN, huge)})
    phase = record.phases[0]
    scales = [w.update_scale for w in phase.client_work if w.partition == 0]
    assert scales and all(s < 1e-2 for s in scales)
    assert any("node 100's unlearning update" in f and "scaled down" in f for f in record.failures)
    assert record.final_ta > 80.0  # the bounded step did not destroy the global model


def test_nan_in_a_requesters_unlearned_arrays_is_rejected_and_its_request_stays_pending() -> None:
    record, world, _ = scripted_run(tiny_scenario(), {100: replacing_arrays(P.MSG_UNLEARN, nan)})
    assert any("node 100" in f and "NaN or Inf" in f for f in record.failures)
    assert world.filed[0].request_id in world.node(0).pending
    assert _finite(record.final_state)


def test_a_crash_during_commit_leaves_that_request_pending_and_unpublished_as_committed() -> None:
    record, world, _ = scripted_run(tiny_scenario(), {100: failing(P.MSG_COMMIT)})
    phase = next(p for p in record.phases if p.passed)
    crashed, fine = world.filed[0], world.filed[1]
    assert crashed.request_id not in phase.committed and fine.request_id in phase.committed
    assert crashed.request_id in world.node(0).pending and not world.node(0).receipts  # nothing purged
    assert any("query.commit" in f and "node 100" in f for f in record.failures)


def test_a_commit_that_crashed_once_is_finished_by_asking_again() -> None:
    record, world, grid = scripted_run(tiny_scenario(), {100: failing_once(P.MSG_COMMIT)})
    [phase] = record.phases
    crashed = world.filed[0].request_id
    assert phase.passed and crashed in phase.committed and not phase.unconfirmed
    assert world.node(0).receipts[crashed]["model_hash_after"] == phase.model_hash
    assert sum(m.metadata.message_type == P.MSG_COMMIT and m.metadata.dst_node_id == 100 for m in grid.sent) == 2
    assert any("query.commit: node 100" in f and "crashed" in f for f in record.failures)
    assert_only_audited_commits(record, world.nodes)
    assert not any(node.pending for node in world.nodes.values())  # nothing lost


def test_a_commit_whose_reply_is_lost_once_is_confirmed_by_the_repeat_and_done_once() -> None:
    """The node committed and purged, the server never heard: it asks again, and the node's idempotent
    commit answers without committing a second time, so report and ledger agree."""
    record, world, grid = scripted_run(tiny_scenario(), {100: lost_reply_once(P.MSG_COMMIT)})
    [phase] = record.phases
    heard_late = world.filed[0].request_id
    assert heard_late in phase.committed and not phase.unconfirmed
    assert world.node(0).receipts[heard_late]["model_hash_after"] == phase.model_hash
    assert sum(m.metadata.message_type == P.MSG_COMMIT and m.metadata.dst_node_id == 100 for m in grid.sent) == 2
    assert_only_audited_commits(record, world.nodes)


def test_a_commit_never_answered_is_unconfirmed_not_pending_and_not_done_again() -> None:
    """Both asks lose their answer: the node committed, the server cannot know. It must not claim the
    commit, nor call the request pending, and the request, no longer pending there, is not redone."""
    record, world, grid = scripted_run(tiny_scenario(), {100: lost_reply(P.MSG_COMMIT)})
    unheard = world.filed[0].request_id
    assert all(unheard not in p.committed for p in record.phases)
    assert [unheard] == [r for p in record.phases for r in p.unconfirmed]
    assert unheard in world.node(0).receipts and not world.node(0).pending
    assert any("query.commit, asked again: node 100" in f and "no reply" in f for f in record.failures)
    assert sum(m.metadata.message_type == P.MSG_COMMIT and m.metadata.dst_node_id == 100 for m in grid.sent) == 2
    assert_only_audited_commits(record, world.nodes)


def test_a_server_that_dies_while_committing_is_finished_by_the_restarted_server() -> None:
    nodes = scripted_nodes(3)
    with pytest.raises(ServerDied):  # node 100's commit went out, node 101's never did
        scripted_run(tiny_scenario(), {101: server_dies_at(P.MSG_COMMIT)}, nodes)
    [done] = nodes[100].receipts
    [waiting] = nodes[101].pending
    assert not nodes[101].receipts and nodes[101].pending[waiting] > 0  # its samples still there
    record, _, _ = scripted_run(tiny_scenario(with_requests=False), nodes=nodes)
    [phase] = record.phases
    assert phase.passed and phase.committed == [waiting] and nodes[100].receipts.keys() == {done}
    assert_only_audited_commits(record, nodes)
    assert not any(node.pending for node in nodes.values())
