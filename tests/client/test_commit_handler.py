"""The node's query.commit handler: a repeat of the same commit (the server asking again after a lost
answer) is answered without committing twice; anything else on a settled request is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.app import ConfigRecord

from fedunlearn.client import handlers
from fedunlearn.client.session import NodeSession
from fedunlearn.common import protocol as P
from fedunlearn.common.data.datasets import load_dataset
from fedunlearn.common.errors import RequestError
from fedunlearn.common.nodes import NodeDirectory, NodeLayout, RequestStatus, materialise_node

REASON = "data subject asked for erasure"


@pytest.fixture
def node(tmp_path: Path) -> NodeDirectory:
    layout = NodeLayout(dataset="digits", partition=0, num_partitions=3)
    return materialise_node(tmp_path / "node", load_dataset("digits"), layout)


def _commit(node: NodeDirectory, request_ids: list[str], model_hash: str) -> list[str]:
    config = ConfigRecord({P.REQUEST_IDS: request_ids, P.MODEL_HASH_BEFORE: "a" * 64, P.MODEL_HASH_AFTER: model_hash,
                           P.AUDIT_SUMMARY: '{"passed": true}'})
    reply = handlers.commit(NodeSession(node, config))
    return [str(r) for r in reply.config_records[P.STATUS][P.COMMITTED]]  # type: ignore[union-attr]


def test_a_repeated_commit_answers_the_same_and_changes_nothing(node: NodeDirectory) -> None:
    ids = node.train().ids[:4].tolist()
    request = node.submit(ids=ids, reason=REASON)
    assert _commit(node, [request.request_id], "b" * 64) == [request.request_id]
    receipt = node.receipt_path(request.request_id).read_text()
    left = len(node.train())

    assert _commit(node, [request.request_id], "b" * 64) == [request.request_id]
    assert node.receipt_path(request.request_id).read_text() == receipt  # not re-stamped
    assert len(node.train()) == left and not set(ids) & set(node.train().ids.tolist())


def test_a_repeat_may_carry_new_pending_requests_which_it_commits(node: NodeDirectory) -> None:
    first = node.submit(ids=node.train().ids[:2].tolist(), reason=REASON)
    _commit(node, [first.request_id], "b" * 64)
    second = node.submit(ids=node.train().ids[:3].tolist(), reason=REASON)
    assert _commit(node, [first.request_id, second.request_id], "b" * 64) == [first.request_id, second.request_id]
    assert node.ledger.get(second.request_id).status is RequestStatus.COMMITTED


def test_a_settled_request_under_another_model_is_refused(node: NodeDirectory) -> None:
    request = node.submit(ids=node.train().ids[:2].tolist(), reason=REASON)
    _commit(node, [request.request_id], "b" * 64)
    with pytest.raises(RequestError, match="not pending"):
        _commit(node, [request.request_id], "c" * 64)
    with pytest.raises(RequestError, match="named no requests"):
        _commit(node, [], "b" * 64)
