"""Fault hooks for ``InProcessGrid``: each takes the server's message and the node's honest reply (a
thunk) and returns what the server receives instead (None: the node stays silent). The same hooks
serve real ClientApps (test_federation.py) and scripted nodes (test_fault_replies.py)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from flwr.app import ArrayRecord, Error, Message, MetricRecord, RecordDict

from common import protocol as P
from tests.server.in_process import Fault

__all__ = ["failing", "huge", "leaky_audit", "nan", "replacing_arrays", "reshaped", "silent"]


def failing(kind: str) -> Fault:
    """The node's ClientApp crashes on messages of type ``kind`` (an error reply)."""
    def fault(message: Message, honest: Callable[[], Message]) -> Message | None:
        if message.metadata.message_type == kind:
            return Message(Error(code=2, reason="ClientApp crashed"), reply_to=message)
        return honest()

    return fault


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
