"""Fault hooks for ``InProcessGrid``: each takes the server's message and the node's honest reply (a
thunk) and returns what the server receives instead (None: the node stays silent). The same hooks
serve real ClientApps (test_federation.py) and scripted nodes (test_fault_replies.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from flwr.app import ArrayRecord, Error, Message, MetricRecord, RecordDict

from fedunlearn.common import protocol as P
from tests.server.in_process import Fault

__all__ = ["ServerDied", "failing", "failing_once", "huge", "leaky_audit", "lost_reply", "lost_reply_once", "nan",
           "replacing_arrays", "reshaped", "rewriting", "server_dies_at", "silent", "with_fields"]

Rewrite = Callable[[RecordDict], RecordDict]


def failing(kind: str) -> Fault:
    """The node's ClientApp crashes on messages of type ``kind`` (an error reply)."""
    def fault(message: Message, honest: Callable[[], Message]) -> Message | None:
        if message.metadata.message_type == kind:
            return Message(Error(code=2, reason="ClientApp crashed"), reply_to=message)
        return honest()

    return fault


def failing_once(kind: str) -> Fault:
    """The node's ClientApp crashes on its first message of type ``kind`` only: a retry finds it well."""
    crashed: list[Message] = []

    def fault(message: Message, honest: Callable[[], Message]) -> Message | None:
        if message.metadata.message_type == kind and not crashed:
            crashed.append(message)
            return Message(Error(code=2, reason="ClientApp crashed"), reply_to=message)
        return honest()

    return fault


def lost_reply(kind: str) -> Fault:
    """The node does its work on messages of type ``kind``, but its reply never reaches the server."""
    def fault(message: Message, honest: Callable[[], Message]) -> Message | None:
        reply = honest()
        return None if message.metadata.message_type == kind else reply

    return fault


def lost_reply_once(kind: str) -> Fault:
    """As ``lost_reply``, for the first message of type ``kind`` only."""
    lost: list[Message] = []

    def fault(message: Message, honest: Callable[[], Message]) -> Message | None:
        reply = honest()
        if message.metadata.message_type == kind and not lost:
            lost.append(message)
            return None
        return reply

    return fault


class ServerDied(Exception):
    """The ServerApp process ended (killed, out of memory) in the middle of an exchange."""


def server_dies_at(kind: str) -> Fault:
    """The server dies just before its message of type ``kind`` reaches this node."""
    def fault(message: Message, honest: Callable[[], Message]) -> Message | None:
        if message.metadata.message_type == kind:
            raise ServerDied(f"the server died before sending {kind} to node {message.metadata.dst_node_id}")
        return honest()

    return fault


def rewriting(rewrites: Mapping[str, Rewrite]) -> Fault:
    """Replies to each message type named in ``rewrites`` carry ``rewrites[type](honest content)`` instead:
    a node that lies about what it holds or did."""
    def fault(message: Message, honest: Callable[[], Message]) -> Message | None:
        reply = honest()
        rewrite = rewrites.get(message.metadata.message_type)
        if rewrite is None or reply.has_error():
            return reply
        return Message(rewrite(reply.content), reply_to=message)

    return fault


def with_fields(record: str, change: Callable[[dict[str, Any]], Mapping[str, Any]]) -> Rewrite:
    """A rewrite of one config or metric record of a reply: ``change`` maps its honest fields to those sent."""
    def rewrite(content: RecordDict) -> RecordDict:
        changed = content.copy()
        honest = content[record]
        changed[record] = type(honest)(dict(change(dict(honest))))  # type: ignore[arg-type]
        return changed

    return rewrite


def silent(message: Message, honest: Callable[[], Message]) -> Message | None:
    """The node never answers (crashed or timed out)."""
    return None


def replacing_arrays(kind: str, corrupt: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
                     record: str = P.ARRAYS) -> Fault:
    """Replies to ``kind`` carry ``corrupt(arrays)`` in ``record`` instead of the honest arrays."""
    def fault(message: Message, honest: Callable[[], Message]) -> Message | None:
        reply = honest()
        if message.metadata.message_type != kind or reply.has_error():
            return reply
        content = RecordDict({name: value for name, value in reply.content.array_records.items()})
        content[record] = ArrayRecord(torch_state_dict=corrupt(content[record].to_torch_state_dict()))
        content[P.METRICS] = reply.content.metric_records[P.METRICS]
        return Message(content, reply_to=message)

    return fault


def nan(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    first = next(iter(state))
    return {**state, first: torch.full_like(state[first], float("nan"))}


def reshaped(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    first = next(iter(state))
    return {**state, first: torch.zeros(3, 3)}


def huge(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v + 1e3 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}


def leaky_audit(message: Message, honest: Callable[[], Message]) -> Message | None:
    """Audits come back as if the model still remembered the forget set (every attack AUC 0.9)."""
    reply = honest()
    if message.metadata.message_type != P.MSG_AUDIT:
        return reply
    metrics = dict(reply.content.metric_records[P.METRICS])
    for key in list(metrics):
        if key.startswith(P.AUC_PREFIX):
            metrics[key] = 0.9
    return Message(RecordDict({P.METRICS: MetricRecord(metrics)}), reply_to=message)  # type: ignore[arg-type]
